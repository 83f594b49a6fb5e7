// `racker run --boot`: an OS container. The image's systemd runs as PID 1 (container=racker,
// tmpfs /run and /tmp, a writable name=systemd and unified cgroup of its own in a cgroup
// namespace, NOTIFY_SOCKET=/run/host/notify); once it reports READY=1 the user's command runs
// inside through Runtime::exec, then the system is shut down (SIGRTMIN+3, SIGKILL after 10 s)
// and removed.
// Future work: boot automatically when no command is given and the image's /sbin/init is
// systemd; a booted container without a command (wait for the init, console on a pty); -d.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "runtime/container.hpp"

namespace racker::engine::boot {

struct BootOptions {
  int ready_timeout_ms = 30000;     // READY=1 deadline
  int shutdown_timeout_ms = 10000;  // SIGRTMIN+3 -> SIGKILL
};

// The init to run: /lib/systemd/systemd, or /sbin/init when it leads to systemd. Throws
// racker::Error when the rootfs has neither.
std::string find_init(const std::string& rootfs);

// Turns the spec built for `racker run` into one for a booted system. Creates the notify
// socket (container dir + "/notify"), writes a machine-id into the rootfs when the image's is
// empty; returns the socket fd.
int prepare_spec(nlohmann::json& config, const std::string& cdir, const std::string& init);

// Creates and starts the container (init's output goes to cdir/console.log), waits for
// READY=1 on notify_fd, runs cmd with Runtime::exec, shuts the system down and removes the
// runtime state. Returns cmd's exit status. Throws racker::Error when the system does not
// come up (the message ends with the last lines of the console log).
int run_booted(runtime::Runtime& rt, const std::string& id, const runtime::CreateOptions& opts,
               const std::string& cdir, int notify_fd, runtime::ExecOptions cmd,
               const BootOptions& bo);

}  // namespace racker::engine::boot
