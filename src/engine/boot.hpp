// `racker run --boot`: an OS container. The image's systemd runs as PID 1 (container=racker,
// tmpfs /run and /tmp, a writable name=systemd and unified cgroup of its own in a cgroup
// namespace, NOTIFY_SOCKET=/run/host/notify); once it reports READY=1 the user's command runs
// inside through Runtime::exec, then the system is shut down (SIGRTMIN+3, SIGKILL after 10 s)
// and removed.
#pragma once

#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/fd.hpp"

#include "base/error.hpp"
#include "engine/seccomp_profile.hpp"
#include "runtime/container.hpp"

namespace racker::engine::boot {

// Runs fn with fd 0 on /dev/null and fds 1, 2 on path (appended); restores them after.
// (The runtime hands a container racker's own stdio.)
template <class F>
auto with_stdio_to(const std::string& path, F fn) {
  UniqueFd out = open_log(path), in = open_dev_null();
  Redirect r0(0, in.get()), r1(1, out.get()), r2(2, out.get());
  return fn();
}

struct BootOptions {
  int ready_timeout_ms = 30000;     // READY=1 deadline
  int shutdown_timeout_ms = 10000;  // SIGRTMIN+3 -> SIGKILL
  bool fast_teardown = false;       // SIGKILL everything instead of a clean shutdown
  // The image's programs run through qemu-user, which maps the guest's real-time signals onto
  // other host numbers (by its version): the halt is sent from inside, by the guest's kill.
  bool emulated = false;
};

struct Booted {
  pid_t pid = -1;  // the container's init, our child
  UniqueFd pidfd;
  long ready_ms = 0;  // start to READY=1
};

// Creates and starts the container (init's output goes to cdir/console.log) and waits for
// READY=1 on notify_fd. Throws racker::Error when the system does not come up (the message ends
// with the last lines of the console log); the container is stopped and removed then.
Booted start_and_wait(runtime::Runtime& rt, const std::string& id,
                      const runtime::CreateOptions& opts, const std::string& cdir, int notify_fd,
                      const BootOptions& bo);
// Shuts the system down (SIGRTMIN+3, SIGKILL after the timeout; or SIGKILL at once with
// fast_teardown) and removes the runtime's state. Idempotent.
void stop(runtime::Runtime& rt, const std::string& id, Booted& b, const BootOptions& bo);

// The last n lines of a file (trailing blank lines dropped), each on a line of its own
// indented by two spaces: the tail of a log for an error message. "" for none.
std::string file_tail(const std::string& path, size_t n);

// The init to run: /lib/systemd/systemd, or /sbin/init when it leads to systemd. Throws
// racker::Error when the rootfs has neither.
std::string find_init(const std::string& rootfs);

// The datagram socket cdir/notify (made anew) that the booted system's NOTIFY_SOCKET
// reaches; returns its fd.
UniqueFd bind_notify_socket(const std::string& cdir, const nlohmann::json& config);

// Turns the spec built for `racker run` into one for a booted system. Creates the notify
// socket (container dir + "/notify"), writes a machine-id into the rootfs when the image's is
// empty; returns the socket fd. The init's seccomp filter follows seccomp: the built-in
// choice becomes the OS init's profile (nspawn's), resolved for the init's capabilities.
UniqueFd prepare_spec(nlohmann::json& config, const std::string& cdir, const std::string& init,
                      const SeccompChoice& seccomp);

// The signal that interrupted the last start_and_wait (it then threw an Error with EINTR).
int interrupting_signal();

// start_and_wait, cmd through Runtime::exec, stop. Returns cmd's exit status.
int run_booted(runtime::Runtime& rt, const std::string& id, const runtime::CreateOptions& opts,
               const std::string& cdir, int notify_fd, runtime::ExecOptions cmd,
               const BootOptions& bo);

}  // namespace racker::engine::boot
