#include "engine/rootless.hpp"

#include <fcntl.h>
#include <linux/magic.h>
#include <sched.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "base/error.hpp"
#include "base/fd.hpp"
#include "base/fs.hpp"
#include "base/ids.hpp"
#include "base/strings.hpp"
#include "engine/idrange.hpp"
#include "runtime/idmap.hpp"
#include "runtime/state_store.hpp"

namespace racker::engine {
namespace {

// The host uid that uid 0 maps to in our user namespace (our own uid outside one).
uid_t host_uid() {
  if (::geteuid() != 0) return ::geteuid();
  return host_uid_of_root().value_or(::geteuid());
}

std::string env_dir(const char* name) {
  const char* v = std::getenv(name);
  return v && *v == '/' ? std::string(v) : "";
}

// The user's racker runtime directory: $XDG_RUNTIME_DIR/racker, else /tmp/racker-UID; made
// 0700 and refused when it is not the user's own (a shared /tmp).
std::string user_runtime_dir() {
  std::string xdg = env_dir("XDG_RUNTIME_DIR");
  std::string dir = !xdg.empty() ? xdg + "/racker" : "/tmp/racker-" + std::to_string(host_uid());
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) throw_errno("create " + dir);
  struct stat st;
  if (::lstat(dir.c_str(), &st) != 0) throw_errno("stat " + dir);
  // (inside the namespace the user is 0, and so is the owner of the user's files)
  if (!S_ISDIR(st.st_mode) || st.st_uid != ::geteuid())
    throw Error(dir + " is not a directory of yours: remove it or set XDG_RUNTIME_DIR", EPERM);
  return dir;
}

std::vector<oci::IdMapping> mappings_for(const char* file, const std::string& name, uint32_t own,
                                         bool* has_range) {
  std::vector<oci::IdMapping> maps = {{0, own, 1}};
  std::string text;
  try {
    text = read_file(file);
  } catch (const Error&) {
  }
  auto ranges = subid_ranges(text, name);
  if (ranges.empty()) ranges = subid_ranges(text, std::to_string(own));
  uint32_t next = 1;
  for (auto& r : ranges) {
    uint32_t count = static_cast<uint32_t>(std::min<uint64_t>(r.count, 0xffffffffu - next));
    if (count == 0) break;
    maps.push_back({next, r.start, count});
    next += count;
  }
  *has_range = !ranges.empty();
  return maps;
}

bool write_all(int fd, const std::string& s) {
  return ::write(fd, s.data(), s.size()) == static_cast<ssize_t>(s.size());
}

std::string read_some(int fd) {
  char buf[64];
  ssize_t n;
  do {
    n = ::read(fd, buf, sizeof buf);
  } while (n < 0 && errno == EINTR);
  return n > 0 ? std::string(buf, static_cast<size_t>(n)) : "";
}

// Joins the pause process' user and mount namespaces if it is alive. False if there is none.
bool join_pause(const std::string& pid_file) {
  std::string text;
  try {
    text = read_file(pid_file);
  } catch (const Error&) {
    return false;
  }
  auto f = split(trim(text), ' ');
  if (f.size() != 2) return false;
  auto pid = parse_uint(f[0]);
  auto start = parse_uint(f[1]);
  if (!pid || !start || runtime::process_start_time(static_cast<pid_t>(*pid)) != *start)
    return false;
  std::string ns = "/proc/" + f[0] + "/ns/";
  UniqueFd user(::open((ns + "user").c_str(), O_RDONLY | O_CLOEXEC));
  UniqueFd mnt(::open((ns + "mnt").c_str(), O_RDONLY | O_CLOEXEC));
  if (!user || !mnt) return false;
  if (::setns(user.get(), CLONE_NEWUSER) != 0) throw_errno("join the rootless user namespace");
  if (::setns(mnt.get(), CLONE_NEWNS) != 0) throw_errno("join the rootless mount namespace");
  if (::setresgid(0, 0, 0) != 0 || ::setresuid(0, 0, 0) != 0)
    throw_errno("become root in the rootless user namespace");
  return true;
}

// Makes the pause process: a user namespace with the user's ids mapped, a mount namespace
// owned by it (mounts from the host propagate in, none out), then a process that only waits,
// in its own session, reparented away from us. Writes "PID STARTTIME" to pid_file.
void make_pause(const std::string& pid_file) {
  uid_t uid = ::geteuid();
  gid_t gid = ::getegid();
  std::string name = user_name(uid);
  bool has_uids = false, has_gids = false;
  auto uids = mappings_for("/etc/subuid", name, uid, &has_uids);
  auto gids = mappings_for("/etc/subgid", name, gid, &has_gids);
  if (!has_uids || !has_gids)
    std::fprintf(stderr,
                 "racker: warning: %s has no subordinate ids in %s: only your own id is mapped "
                 "(files of other owners in images become yours, and a container has one user); "
                 "add a range with: usermod --add-subuids 100000-165535 --add-subgids "
                 "100000-165535 %s\n",
                 name.c_str(), !has_uids ? "/etc/subuid" : "/etc/subgid", name.c_str());
  int up[2], down[2];
  if (::pipe2(up, O_CLOEXEC) != 0 || ::pipe2(down, O_CLOEXEC) != 0) throw_errno("pipe");
  UniqueFd up_r(up[0]), up_w(up[1]), down_r(down[0]), down_w(down[1]);
  pid_t child = ::fork();
  if (child < 0) throw_errno("fork");
  if (child == 0) {
    up_r.reset();
    down_w.reset();
    auto fail = [&](const char* what) {
      write_all(up_w.get(), std::string("E") + what + ": " + std::strerror(errno));
      _exit(1);
    };
    ::setsid();
    if (::unshare(CLONE_NEWUSER) != 0) fail("create a user namespace");
    write_all(up_w.get(), "u");
    if (read_some(down_r.get()) != "g") _exit(1);
    if (::setresgid(0, 0, 0) != 0 || ::setresuid(0, 0, 0) != 0) fail("become root in it");
    if (::unshare(CLONE_NEWNS) != 0) fail("create a mount namespace");
    if (::mount(nullptr, "/", nullptr, MS_REC | MS_SLAVE, nullptr) != 0)
      fail("make the mounts slaves");
    pid_t pause = ::fork();
    if (pause < 0) fail("fork");
    if (pause == 0) {
      ::prctl(PR_SET_NAME, "racker-pause", 0, 0, 0);
      if (::chdir("/") != 0) _exit(1);
      int null = ::open("/dev/null", O_RDWR);
      for (int fd = 0; fd < 3; ++fd) ::dup2(null, fd);
      ::close_range(3, ~0u, 0);
      for (int s = 1; s < 32; ++s)
        if (s != SIGKILL && s != SIGSTOP && s != SIGTERM) ::signal(s, SIG_IGN);
      ::signal(SIGTERM, SIG_DFL);
      for (;;) ::pause();
    }
    write_all(up_w.get(), "p" + std::to_string(pause));
    _exit(0);
  }
  up_w.reset();
  down_r.reset();
  auto reap = [&] {
    int st;
    while (::waitpid(child, &st, 0) < 0 && errno == EINTR) {
    }
  };
  std::string msg = read_some(up_r.get());
  if (msg != "u") {
    reap();
    throw Error("rootless: " + (msg.size() > 1 ? msg.substr(1) : "the namespace helper died"),
                EPERM);
  }
  try {
    runtime::write_id_maps(child, uids, gids);
  } catch (...) {
    down_w.reset();
    reap();
    throw;
  }
  write_all(down_w.get(), "g");
  msg = read_some(up_r.get());
  reap();
  if (msg.empty() || msg[0] != 'p')
    throw Error("rootless: " + (msg.size() > 1 ? msg.substr(1) : "the namespace helper died"),
                EPERM);
  auto pause = parse_uint(msg.substr(1));
  if (!pause) throw Error("rootless: no pause process", ECHILD);
  unsigned long long start = runtime::process_start_time(static_cast<pid_t>(*pause));
  write_file_atomic(pid_file, msg.substr(1) + " " + std::to_string(start) + "\n", 0600);
}

}  // namespace

bool rootless() {
  return !host_root();
}

std::string delegated_cgroup() {
  std::string mount;
  for (const char* m : {"/sys/fs/cgroup", "/sys/fs/cgroup/unified"}) {
    struct statfs fs;
    if (::statfs(m, &fs) == 0 && fs.f_type == CGROUP2_SUPER_MAGIC) {
      mount = m;
      break;
    }
  }
  if (mount.empty()) return "";
  std::string own;
  for (auto& line : split(read_file_if_exists("/proc/self/cgroup").value_or(""), '\n'))
    if (line.starts_with("0::")) own = clean_path(line.substr(3));
  // (inside the user namespace the user's files show as root's: geteuid() is the owner)
  auto ours = [&](const std::string& rel) {
    struct stat st;
    std::string dir = mount + rel;
    return ::stat(dir.c_str(), &st) == 0 && S_ISDIR(st.st_mode) && st.st_uid == ::geteuid() &&
           ::access((dir + "/cgroup.procs").c_str(), W_OK) == 0 && ::access(dir.c_str(), W_OK) == 0;
  };
  if (own.empty() || own == "/" || !ours(own)) return "";
  std::string top = own;
  for (;;) {
    std::string parent = top.substr(0, top.rfind('/'));
    if (parent.empty() || !ours(parent)) break;
    top = parent;
  }
  return top;
}

std::string default_store_root() {
  if (!rootless()) return "/var/lib/racker";
  std::string data = env_dir("XDG_DATA_HOME");
  if (!data.empty()) return data + "/racker";
  std::string home = env_dir("HOME");
  if (home.empty()) throw Error("rootless: HOME is not set (racker keeps its store there)", EINVAL);
  return home + "/.local/share/racker";
}

std::string default_state_root() {
  if (!rootless()) return "/run/racker";
  return user_runtime_dir() + "/run";
}

std::string pause_pid_file() {
  if (!rootless()) return "";
  return user_runtime_dir() + "/pause.pid";
}

void enter_rootless_namespaces() {
  if (::geteuid() == 0) return;
  std::string dir = user_runtime_dir();
  std::string pid_file = dir + "/pause.pid";
  if (join_pause(pid_file)) return;
  UniqueFd lock(::open((dir + "/pause.lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  if (!lock || ::flock(lock.get(), LOCK_EX) != 0) throw_errno("lock " + dir + "/pause.lock");
  if (join_pause(pid_file)) return;
  make_pause(pid_file);
  if (!join_pause(pid_file)) throw Error("rootless: the pause process is gone", ESRCH);
}

}  // namespace racker::engine
