#include "engine/boot.hpp"
#include "engine/foreign_arch.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>

#include "base/error.hpp"
#include "base/fs.hpp"
#include "base/log.hpp"
#include "base/strings.hpp"
#include "base/timing.hpp"
#include "engine/host_limits.hpp"
#include "engine/rootless.hpp"
#include "engine/spec_builder.hpp"
#include "oci/capabilities.hpp"
#include "runtime/caps.hpp"
#include "runtime/cgroups.hpp"
#include "runtime/mounts.hpp"
#include "runtime/systemd_bus.hpp"

namespace racker::engine::boot {
namespace {

using Clock = std::chrono::steady_clock;

// systemd-nspawn's default capability set, minus what this host may not grant
const char* const kBootCaps[] = {"CAP_AUDIT_CONTROL", "CAP_AUDIT_WRITE",      "CAP_CHOWN",
                                 "CAP_DAC_OVERRIDE",  "CAP_DAC_READ_SEARCH",  "CAP_FOWNER",
                                 "CAP_FSETID",        "CAP_IPC_OWNER",        "CAP_KILL",
                                 "CAP_LEASE",         "CAP_LINUX_IMMUTABLE",  "CAP_MKNOD",
                                 "CAP_NET_ADMIN",     "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST",
                                 "CAP_NET_RAW",       "CAP_SETFCAP",          "CAP_SETGID",
                                 "CAP_SETPCAP",       "CAP_SETUID",           "CAP_SYS_ADMIN",
                                 "CAP_SYS_BOOT",      "CAP_SYS_CHROOT",       "CAP_SYS_NICE",
                                 "CAP_SYS_PTRACE",    "CAP_SYS_RESOURCE",     "CAP_SYS_TTY_CONFIG"};

long ms_since(Clock::time_point t0) {
  return static_cast<long>(
      std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0).count());
}

// The last n lines of the console log, for error messages.
std::string console_tail(const std::string& cdir, size_t n) {
  std::string out = file_tail(cdir + "/console.log", n);
  return out.empty() ? "\n  (the init wrote nothing to the console)" : out;
}

// The container's name (the spec's annotation), else its id.
std::string container_name(const std::string& cdir, const std::string& id) {
  try {
    auto config = nlohmann::json::parse(read_file(cdir + "/config.json"));
    return config["annotations"].value(kNameAnnotation, id);
  } catch (const std::exception&) {
    return id;
  }
}

// SIGRTMIN+3 (systemd's "halt"; sent by the caller when signal is false), SIGKILL after
// timeout_ms; reaps the init (our child).
void shut_down(pid_t pid, int pidfd, int timeout_ms, bool signal = true) {
  if (signal) ::kill(pid, SIGRTMIN + 3);
  bool gone = false;
  if (pidfd >= 0) {
    struct pollfd p = {pidfd, POLLIN, 0};
    auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
    while (!gone) {
      long left =
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
      if (left <= 0) break;
      int r = ::poll(&p, 1, static_cast<int>(left));
      if (r > 0) gone = true;
      if (r < 0 && errno != EINTR) break;
    }
  }
  if (!gone) {
    log::warn("booted container did not stop within " + std::to_string(timeout_ms / 1000) +
              " s of SIGRTMIN+3: killing it");
    ::kill(pid, SIGKILL);
  }
  while (::waitpid(pid, nullptr, 0) < 0 && errno == EINTR) {
  }
}

std::atomic<int> g_boot_signal{0};

void on_boot_signal(int sig) {
  g_boot_signal.store(sig);
}

// Ctrl-C, SIGTERM or SIGHUP while a system boots: noted (the wait ends and the container is
// removed) instead of killing racker and leaving the container behind. Restores the previous
// handlers when it goes out of scope.
struct BootSignalGuard {
  static constexpr int kSignals[] = {SIGINT, SIGTERM, SIGHUP};
  struct sigaction old[3];
  BootSignalGuard() {
    g_boot_signal.store(0);
    struct sigaction sa = {};
    sa.sa_handler = on_boot_signal;
    sigemptyset(&sa.sa_mask);
    for (int i = 0; i < 3; ++i) ::sigaction(kSignals[i], &sa, &old[i]);
  }
  ~BootSignalGuard() {
    for (int i = 0; i < 3; ++i) ::sigaction(kSignals[i], &old[i], nullptr);
  }
  BootSignalGuard(const BootSignalGuard&) = delete;
  BootSignalGuard& operator=(const BootSignalGuard&) = delete;
};

}  // namespace

std::string file_tail(const std::string& path, size_t n) {
  auto lines = split(read_file_if_exists(path).value_or(""), '\n');
  while (!lines.empty() && trim(lines.back()).empty()) lines.pop_back();
  std::string out;
  for (size_t i = lines.size() > n ? lines.size() - n : 0; i < lines.size(); ++i)
    out += "\n  " + lines[i];
  return out;
}

std::string find_init(const std::string& rootfs) {
  for (const char* p : {"/lib/systemd/systemd", "/usr/lib/systemd/systemd"}) {
    std::string host = runtime::secure_join(rootfs, p);
    if (::access(host.c_str(), X_OK) == 0) return p;
  }
  throw Error("--boot: the image has no systemd (/lib/systemd/systemd)", ENOENT);
}

// The host uid and gid of the container's root: (0, 0) without a user namespace.
static std::pair<uint32_t, uint32_t> root_ids(const nlohmann::json& config) {
  auto root_of = [&](const char* key) -> uint32_t {
    auto l = config.find("linux");
    if (l == config.end() || !l->contains(key) || !(*l)[key].is_array()) return 0;
    for (auto& m : (*l)[key])
      if (m.value("containerID", 1u) == 0) return m.value("hostID", 0u);
    return 0;
  };
  return {root_of("uidMappings"), root_of("gidMappings")};
}

UniqueFd bind_notify_socket(const std::string& cdir, const nlohmann::json& config) {
  // bound through /proc/self/fd because cdir may exceed sun_path
  UniqueFd dirfd(::open(cdir.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!dirfd) throw_errno("open " + cdir);
  UniqueFd sock(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!sock) throw_errno("socket");
  struct sockaddr_un addr = {};
  addr.sun_family = AF_UNIX;
  std::string path = "/proc/self/fd/" + std::to_string(dirfd.get()) + "/notify";
  std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", path.c_str());
  ::unlink((cdir + "/notify").c_str());
  if (::bind(sock.get(), reinterpret_cast<struct sockaddr*>(&addr), sizeof addr) != 0)
    throw_errno("bind " + cdir + "/notify");
  // in a user namespace, systemd (the range's root) must be allowed to connect
  auto [uid, gid] = root_ids(config);
  if ((uid || gid) && ::fchownat(dirfd.get(), "notify", uid, gid, 0) != 0)
    throw_errno("chown " + cdir + "/notify");

  return sock;
}

// The version of the systemd in rootfs (from its libsystemd-shared-NNN.so); 0 when unknown.
int systemd_version(const std::string& rootfs) {
  int best = 0;
  std::vector<std::string> dirs = {"/usr/lib/systemd", "/lib/systemd"};
  try {
    for (auto& d : dir_names(runtime::secure_join(rootfs, "/usr/lib")))
      if (d.find("-linux-") != std::string::npos) dirs.push_back("/usr/lib/" + d + "/systemd");
  } catch (const Error&) {
  }
  for (auto& d : dirs) {
    std::vector<std::string> names;
    try {
      names = dir_names(runtime::secure_join(rootfs, d));
    } catch (const Error&) {
      continue;
    }
    for (auto& n : names)
      if (n.starts_with("libsystemd-shared-") && n.ends_with(".so"))
        if (auto v = parse_uint(n.substr(18, n.size() - 21)); v && *v < 100000)
          best = std::max(best, static_cast<int>(*v));
  }
  return best;
}

UniqueFd prepare_spec(nlohmann::json& config, const std::string& cdir, const std::string& init,
                      const SeccompChoice& seccomp) {
  auto& p = config["process"];
  p["args"] = nlohmann::json::array({init});
  p["terminal"] = false;
  p["cwd"] = "/";
  p["user"] = {{"uid", 0}, {"gid", 0}};
  auto& env = p["env"];
  nlohmann::json kept = nlohmann::json::array();
  for (auto& e : env) {
    std::string s = e.get<std::string>();
    if (!s.starts_with("container=") && !s.starts_with("NOTIFY_SOCKET=")) kept.push_back(s);
  }
  kept.push_back("container=racker");
  kept.push_back("NOTIFY_SOCKET=/run/host/notify");
  env = kept;

  uint64_t bounding = runtime::own_bounding_set();
  nlohmann::json caps = nlohmann::json::array();
  for (const char* c : kBootCaps) {
    auto n = oci::capability_from_name(c);
    if (n && ((bounding >> *n) & 1)) caps.push_back(c);
  }
  p["capabilities"] = {{"bounding", caps}, {"effective", caps}, {"permitted", caps}};
  apply_seccomp(config, seccomp, true);

  // machine-id: an empty one makes every boot a first boot (presets, a transient id);
  // write a real one into the container's upper layer instead
  std::string mid = runtime::secure_join(config["root"].value("path", ""), "/etc/machine-id");
  if (trim(read_file_if_exists(mid).value_or("")).empty()) {
    write_file_atomic(mid, random_hex(32) + "\n", 0444);
    auto [uid, gid] = root_ids(config);
    if ((uid || gid) && ::chown(mid.c_str(), uid, gid) != 0) throw_errno("chown " + mid);
  }

  UniqueFd sock = bind_notify_socket(cdir, config);

  auto& mounts = config["mounts"];
  bool hybrid = path_exists("/sys/fs/cgroup/unified") || path_exists("/sys/fs/cgroup/systemd");
  std::string cg = runtime::cgroup_path_below_root(config["linux"].value("cgroupsPath", ""));
  for (auto& m : mounts) {
    if (m["destination"] != "/sys/fs/cgroup" || hybrid) continue;
    // cgroup v2 only: the container's own cgroup, writable (systemd creates its sub-cgroups)
    nlohmann::json o = nlohmann::json::array();
    for (auto& x : m["options"])
      if (x != "ro") o.push_back(x);
    m["options"] = o;
  }
  auto bind = [&](const std::string& src, const std::string& dst, bool ro) {
    nlohmann::json o = {"rbind", "rprivate"};
    if (ro) o.push_back("ro");
    mounts.push_back({{"destination", dst}, {"type", "bind"}, {"source", src}, {"options", o}});
  };
  int sd_version = systemd_version(config["root"].value("path", ""));
  if (hybrid && sd_version >= 258 && path_exists("/sys/fs/cgroup/unified")) {
    // systemd 258 dropped cgroup v1: on a hybrid host its container gets the unified
    // hierarchy alone, its own cgroup there as /sys/fs/cgroup (as nspawn does for it)
    for (auto& m : mounts)
      if (m["destination"] == "/sys/fs/cgroup")
        m = {{"destination", "/sys/fs/cgroup"},
             {"type", "bind"},
             {"source", "/sys/fs/cgroup/unified" + cg},
             {"options", {"rbind", "rprivate", "nosuid", "nodev", "noexec"}}};
  } else if (hybrid) {
    // v1 controllers stay read-only (as nspawn does); systemd's own hierarchies are writable
    // (an ordinary user's container gets its cgroup, made by the runtime after this, only in
    // the hierarchies delegated to the user: where the nearest directory on its path is theirs)
    auto delegated = [&](std::string dir) {
      while (dir.size() > 1 && !path_exists(dir)) dir = dir.substr(0, dir.rfind('/'));
      return ::access(dir.c_str(), W_OK) == 0;
    };
    for (const char* h : {"systemd", "unified"})
      if (path_exists(std::string("/sys/fs/cgroup/") + h) &&
          (!rootless() || delegated(std::string("/sys/fs/cgroup/") + h + cg)))
        bind(std::string("/sys/fs/cgroup/") + h + cg, std::string("/sys/fs/cgroup/") + h, false);
  }
  auto tmpfs = [&](const std::string& dst, nlohmann::json o) {
    mounts.push_back(
        {{"destination", dst}, {"type", "tmpfs"}, {"source", "tmpfs"}, {"options", o}});
  };
  tmpfs("/run", {"nosuid", "nodev", "mode=755"});
  tmpfs("/run/lock", {"nosuid", "nodev", "noexec", "mode=1777", "size=5m"});
  tmpfs("/tmp", {"nosuid", "nodev", "mode=1777"});
  bind(cdir + "/notify", "/run/host/notify", false);
  return sock;
}

// machinectl list / systemd-cgls show the booted system (as nspawn's --register=yes does);
// the registration ends with its scope. Best effort: a host without systemd-machined runs
// containers all the same.
void register_machine(const std::string& name, pid_t leader, const std::string& rootfs) {
  try {
    runtime::systemd::Bus().register_machine(runtime::systemd::machine_name(name), leader, rootfs);
  } catch (const Error& e) {
    log::debug("boot: " + std::string(e.what()));
  }
}

Booted start_and_wait(runtime::Runtime& rt, const std::string& id,
                      const runtime::CreateOptions& opts, const std::string& cdir, int notify_fd,
                      const BootOptions& bo) {
  auto t0 = Clock::now();
  BootSignalGuard guard;
  with_stdio_to(cdir + "/console.log", [&] { return rt.run(id, opts, true); });
  Booted b;
  b.pid = rt.state(id).pid;
  b.pidfd.reset(static_cast<int>(::syscall(SYS_pidfd_open, b.pid, 0)));
  try {
    bool ready = false, init_died = false;
    std::string status;
    auto deadline = t0 + std::chrono::milliseconds(bo.ready_timeout_ms);
    while (!ready && !init_died) {
      if (int sig = g_boot_signal.load()) {
        BootOptions now = bo;
        now.fast_teardown = true;
        stop(rt, id, b, now);
        throw Error::interrupted("boot: interrupted by signal " + std::to_string(sig), sig);
      }
      long left =
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
      if (left <= 0) break;
      struct pollfd p[2] = {{notify_fd, POLLIN, 0}, {b.pidfd.get(), POLLIN, 0}};
      int r = ::poll(p, b.pidfd ? 2 : 1, static_cast<int>(left));
      if (r < 0 && errno != EINTR) throw_errno("poll notify socket");
      if (r > 0 && (p[0].revents & POLLIN)) {
        char buf[4096];
        ssize_t n;
        while ((n = ::recv(notify_fd, buf, sizeof buf - 1, 0)) > 0) {
          for (auto& line : split(std::string(buf, static_cast<size_t>(n)), '\n')) {
            if (line == "READY=1") ready = true;
            if (line.starts_with("STATUS=")) status = line.substr(7);
          }
        }
      }
      if (r > 0 && b.pidfd && (p[1].revents & POLLIN)) init_died = true;
    }
    if (!ready && !init_died) {
      // no READY=1 in time: ask systemctl, for an init that does not speak sd_notify
      std::string out = cdir + "/is-system-running";
      runtime::ExecOptions q;
      q.args = {"systemctl", "is-system-running"};
      try {
        with_stdio_to(out, [&] { return rt.exec(id, q); });
        std::string state = trim(read_file_if_exists(out).value_or(""));
        ready = state == "running" || state == "degraded";
      } catch (const Error& e) {
        log::debug("boot: systemctl is-system-running: " + std::string(e.what()));
      }
    }
    if (!ready) {
      std::string why = init_died
                            ? "the init exited during boot"
                            : "not ready after " + std::to_string(bo.ready_timeout_ms / 1000) +
                                  " s" + (status.empty() ? "" : " (" + status + ")");
      std::string tail = console_tail(cdir, 20);
      std::string journal;
      if (!init_died) {
        // systemd logs to its journal, not to the console: what it was waiting for is there
        std::string out = cdir + "/boot-journal";
        runtime::ExecOptions q;
        q.args = {"journalctl", "-b", "--no-pager", "-q", "-n", "200", "-o", "short-monotonic"};
        try {
          with_stdio_to(out, [&] { return rt.exec(id, q); });
          journal = file_tail(out, 15);
        } catch (const Error& e) {
          log::debug("boot: journalctl: " + std::string(e.what()));
        }
      }
      // what systemd logged names the limit it ran into; an init that died before it had a
      // console or journal leaves the host's usage to go by
      // (charged to the owner of the container's user namespace: its range's root, else us)
      uid_t owner = 0;
      try {
        owner = root_ids(nlohmann::json::parse(read_file(cdir + "/config.json"))).first;
      } catch (const std::exception&) {
      }
      auto limit = host_limits::diagnose(
          file_tail(cdir + "/console.log", 200) + file_tail(cdir + "/boot-journal", 200),
          owner ? owner : ::geteuid(), host_limits::real_host());
      BootOptions now = bo;
      now.fast_teardown = true;  // a system that did not come up: nothing to shut down cleanly
      stop(rt, id, b, now);
      std::string details = "boot: " + why + "; last console lines:" + tail +
                            (journal.empty() ? "" : "\nlast journal lines:" + journal);
      if (limit) {
        log::debug(details);
        throw Error("container " + container_name(cdir, id) + ": " + host_limits::describe(*limit),
                    ETIMEDOUT);
      }
      throw Error(details, ETIMEDOUT);
    }
  } catch (...) {
    if (b.pid > 0) stop(rt, id, b, bo);
    throw;
  }
  b.ready_ms = ms_since(t0);
  log::debug("boot: " + id + " ready in " + std::to_string(b.ready_ms) + " ms");
  // Nobody reads the notify socket from now on: refuse further messages (senders get EPIPE)
  // instead of letting its queue (net.unix.max_dgram_qlen) fill, after which systemd as PID 1
  // blocks in sendmsg (systemd 257 did, and then never shut down).
  ::shutdown(notify_fd, SHUT_RD);
  if (runtime::systemd::booted() && !rootless()) {  // (machined registers root's only)
    register_machine(container_name(cdir, id), b.pid, cdir + "/rootfs");
  }
  return b;
}

void stop(runtime::Runtime& rt, const std::string& id, Booted& b, const BootOptions& bo) {
  if (b.pid <= 0) return;
  if (bo.fast_teardown) {
    // a throwaway system: no clean shutdown, every process of the container goes at once
    try {
      rt.kill(id, SIGKILL, true);
    } catch (const Error& e) {
      log::debug("kill booted container " + id + ": " + e.what());
    }
    ::kill(b.pid, SIGKILL);
    while (::waitpid(b.pid, nullptr, 0) < 0 && errno == EINTR) {
    }
  } else if (bo.emulated) {
    // the guest's own kill, through the same qemu: its SIGRTMIN+3 arrives as SIGRTMIN+3
    runtime::ExecOptions q;
    q.args = guest_kill_argv("SIGRTMIN+3");
    bool sent = false;
    try {
      sent = with_stdio_to("/dev/null", [&] { return rt.exec(id, q); }) == 0;
    } catch (const Error& e) {
      log::debug("halt emulated container " + id + ": " + e.what());
    }
    shut_down(b.pid, b.pidfd.get(), sent ? bo.shutdown_timeout_ms : 0, false);
  } else {
    shut_down(b.pid, b.pidfd.get(), bo.shutdown_timeout_ms);
  }
  b.pidfd.reset();
  b.pid = -1;
  try {
    rt.remove(id, true);
  } catch (const Error& e) {
    log::warn("remove booted container " + id + ": " + e.what());
  }
}

int run_booted(runtime::Runtime& rt, const std::string& id, const runtime::CreateOptions& opts,
               const std::string& cdir, int notify_fd, runtime::ExecOptions cmd,
               const BootOptions& bo) {
  timing::mark("setup");  // process start -> boot begins
  Booted b = start_and_wait(rt, id, opts, cdir, notify_fd, bo);
  timing::mark("ready");  // READY=1 (or the systemctl fallback)
  try {
    int rc = rt.exec(id, cmd);
    timing::mark("exec");
    stop(rt, id, b, bo);
    timing::mark("shutdown");  // SIGRTMIN+3 until the init is reaped, and removal
    timing::report();
    return rc;
  } catch (...) {
    stop(rt, id, b, bo);
    throw;
  }
}

int interrupting_signal() {
  return g_boot_signal.load();
}

}  // namespace racker::engine::boot
