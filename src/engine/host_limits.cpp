#include "engine/host_limits.hpp"

#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <vector>

#include "base/fs.hpp"
#include "base/strings.hpp"

namespace racker::engine::host_limits {
namespace {

bool contains(std::string_view hay, std::string_view needle) {
  return hay.find(needle) != std::string_view::npos;
}

// A log line that says errno `error` of an operation about one of `topics`.
bool logged(std::string_view log, std::string_view error,
            std::initializer_list<std::string_view> topics) {
  for (const auto& line : split(std::string(log), '\n')) {
    if (!contains(line, error)) continue;
    for (auto t : topics)
      if (contains(line, t)) return true;
  }
  return false;
}

int64_t count_inotify_instances(uid_t uid) {
  int64_t used = 0;
  DIR* procs = ::opendir("/proc");
  if (!procs) return 0;
  while (auto* e = ::readdir(procs)) {
    if (!parse_int(e->d_name)) continue;
    std::string dir = std::string("/proc/") + e->d_name;
    struct stat st;
    if (::stat(dir.c_str(), &st) != 0 || st.st_uid != uid) continue;
    DIR* fds = ::opendir((dir + "/fd").c_str());
    if (!fds) continue;
    while (auto* f = ::readdir(fds)) {
      char target[64];
      ssize_t n = ::readlinkat(::dirfd(fds), f->d_name, target, sizeof target - 1);
      if (n > 0 && std::string_view(target, static_cast<size_t>(n)) == "anon_inode:inotify") ++used;
    }
    ::closedir(fds);
  }
  ::closedir(procs);
  return used;
}

// /proc/loadavg's fourth field: running/total scheduling entities (threads).
int64_t count_tasks() {
  auto fields = split(trim(read_file_if_exists("/proc/loadavg").value_or("")), ' ');
  if (fields.size() < 4) return 0;
  auto slash = fields[3].find('/');
  return slash == std::string::npos ? 0 : parse_int(fields[3].substr(slash + 1)).value_or(0);
}

std::string proc_sys_path(std::string_view sysctl) {
  std::string p = "/proc/sys/" + std::string(sysctl);
  std::replace(p.begin() + 10, p.end(), '.', '/');
  return p;
}

}  // namespace

HostProbe real_host() {
  return {.sysctl = [](std::string_view name) -> std::optional<int64_t> {
            auto text = read_file_if_exists(proc_sys_path(name));
            return text ? parse_int(trim(*text)) : std::nullopt;
          },
          .inotify_instances = count_inotify_instances,
          .tasks = count_tasks};
}

std::optional<HostLimit> diagnose(std::string_view log, uid_t owner, const HostProbe& host) {
  auto limit = [&](std::string what, const std::string& sysctl,
                   std::string usage = "") -> std::optional<HostLimit> {
    auto v = host.sysctl(sysctl);
    if (!v) return std::nullopt;
    return HostLimit{std::move(what), sysctl, *v, std::move(usage)};
  };
  std::string uid = std::to_string(owner);
  auto inotify_usage = [&] {
    return std::to_string(host.inotify_instances(owner)) + " open under uid " + uid + " now";
  };
  // inotify_add_watch: ENOSPC past max_user_watches; inotify_init: EMFILE past max_user_instances
  if (logged(log, "No space left on device", {"inotify", "watch"}))
    return limit("systemd could not add an inotify watch", "fs.inotify.max_user_watches");
  if (logged(log, "Too many open files", {"inotify", "watch"}))
    return limit("systemd could not create an inotify instance", "fs.inotify.max_user_instances",
                 inotify_usage());
  // add_key/keyctl: EDQUOT past the owner's key quota (root has quotas of its own)
  if (logged(log, "Disk quota exceeded", {"key"}))
    return limit("systemd could not create a kernel key",
                 owner == 0 ? "kernel.keys.root_maxkeys" : "kernel.keys.maxkeys");
  if (logged(log, "No space left on device", {"user namespace", "namespacing", "userns"}))
    return limit("systemd could not create a user namespace", "user.max_user_namespaces");
  int64_t tasks = host.tasks();
  auto task_limit = [&]() -> std::optional<HostLimit> {
    auto pid_max = host.sysctl("kernel.pid_max"), threads = host.sysctl("kernel.threads-max");
    std::string name = "kernel.pid_max";
    auto v = pid_max;
    if (!v || (threads && *threads < *v)) name = "kernel.threads-max", v = threads;
    if (!v || tasks * 100 < *v * 95) return std::nullopt;
    return HostLimit{"the host is out of process ids", name, *v,
                     std::to_string(tasks) + " tasks on the host"};
  };
  if (logged(log, "Resource temporarily unavailable", {"fork", "clone", "thread", "spawn"}))
    if (auto l = task_limit()) return l;

  // Nothing logged (an init that fails before it has a console or journal says nothing):
  // the host's usage then
  auto max_instances = host.sysctl("fs.inotify.max_user_instances");
  if (max_instances) {
    int64_t used = host.inotify_instances(owner);
    if (used + 2 >= *max_instances)
      return HostLimit{"the host's inotify instances are used up", "fs.inotify.max_user_instances",
                       *max_instances, std::to_string(used) + " open under uid " + uid + " now"};
  }
  return task_limit();
}

std::string describe(const HostLimit& l) {
  int64_t suggested = l.value * 2;
  if (l.sysctl == "fs.inotify.max_user_instances") suggested = std::max<int64_t>(1024, l.value * 8);
  if (l.sysctl == "kernel.pid_max") suggested = std::min<int64_t>(suggested, 4194304);
  return l.what + ": " + l.sysctl + " = " + std::to_string(l.value) + " is exhausted (" +
         (l.usage.empty() ? "" : l.usage + "; ") + "raise it with sysctl -w " + l.sysctl + "=" +
         std::to_string(suggested) + ")";
}

}  // namespace racker::engine::host_limits
