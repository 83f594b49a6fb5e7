// Which host-wide kernel limit a booting OS container ran into: from what its systemd logged
// (console and journal lines) and, when it logged nothing, from the host's current usage. For
// a boot error of one line that names the sysctl and its value. Reads /proc only: it never
// changes a limit.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

namespace racker::engine::host_limits {

struct HostLimit {
  std::string what;    // "systemd could not create an inotify instance"
  std::string sysctl;  // "fs.inotify.max_user_instances"
  int64_t value = 0;   // its current value
  std::string usage;   // "128 open under uid 0 now", or "" when not counted
};

// The host as the diagnosis sees it; a fake in unit tests.
struct HostProbe {
  std::function<std::optional<int64_t>(std::string_view sysctl)> sysctl;
  std::function<int64_t(uid_t)> inotify_instances;  // inotify fds open in processes of uid
  std::function<int64_t()> tasks;                   // threads on the host
};

// Reads /proc/sys and /proc/<pid>/fd.
HostProbe real_host();

// The limit a failed boot most likely hit, or nullopt. log: the console and journal lines
// racker has of the boot; owner: the host uid the container's resources are charged to (the
// owner of its user namespace: racker's euid today).
std::optional<HostLimit> diagnose(std::string_view log, uid_t owner, const HostProbe& host);

// One line: "<what>: <sysctl> = <value> is exhausted (<usage>; raise it with sysctl -w
// <sysctl>=<suggestion>)".
std::string describe(const HostLimit& limit);

}  // namespace racker::engine::host_limits
