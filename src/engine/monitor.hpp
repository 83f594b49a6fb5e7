// racker's guard against its own sudden death (kill -9, a signal it cannot handle) during a
// container's life in the foreground: a small process that outlives it, as podman's conmon
// does, without a daemon. Should racker die before it is done with the container, the monitor
// waits for the payload to end (a booted system is stopped at once: its command went with
// racker) and then cleans up as racker would have: with --rm the container goes, else its
// mount, network and runtime state are released and it stays as exited. A container racker
// had not finished making (no meta.json) goes in any case.
// It starts as a watcher that shares racker's memory (no exec, no page tables copied: a run
// pays nothing for it but a clone) and becomes the monitor proper, `racker container monitor`,
// only when there is work: racker gone, or the container handed over (-d --rm).
#pragma once

#include <sys/types.h>

#include <string>
#include <string_view>

#include "base/fd.hpp"

namespace racker::engine {

class RunMonitor {
 public:
  RunMonitor() = default;
  // Starts the monitor of container id (whose directory may not exist yet).
  static RunMonitor start(const std::string& store_root, const std::string& state_root,
                          const std::string& id, bool remove);
  // racker is done with the container, normally or by an error it handled itself: the
  // monitor leaves without doing anything.
  ~RunMonitor();
  // racker run -d --rm: racker leaves the running container to the monitor, which removes it
  // once it has ended (by itself, racker stop or kill), as docker's daemon does.
  void hand_over();
  RunMonitor(RunMonitor&&) noexcept = default;
  RunMonitor& operator=(RunMonitor&&) noexcept = default;

 private:
  UniqueFd pipe_;  // our end; the monitor reads "done" or, when we die, end of file
};

// The monitor's side (racker container monitor): blocks on fd until racker is done ("done":
// returns 0), hands the container over ("hand": waits for it to end, cleans up) or is gone
// (end of file: stops a booted system, waits for the container, cleans up, returns 0).
// then: what the watcher (the process that waits for racker without being the monitor proper)
// saw before it started the monitor: "hand" or "gone"; empty: wait on fd as said.
int monitor_main(int fd, pid_t parent, const std::string& store_root, const std::string& state_root,
                 const std::string& id, bool remove, std::string_view then = {});

// What racker run does after the payload of a foreground run ended, when racker itself could
// not: the runtime's state and cgroups, the network, the overlay mount; with remove the
// container's directory too (also without, when it never got its meta.json).
void clean_up_after(const std::string& store_root, const std::string& state_root,
                    const std::string& id, bool remove);

}  // namespace racker::engine
