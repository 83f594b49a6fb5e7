// `exec`: a new process in a running container — joins the init's namespaces and cgroup,
// then takes the same process setup path as the init.
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "base/error.hpp"
#include "base/fd.hpp"
#include "base/fs.hpp"
#include "base/strings.hpp"
#include "oci/capabilities.hpp"
#include "runtime/cgroups.hpp"
#include "runtime/container.hpp"
#include "runtime/idmap.hpp"
#include "runtime/init.hpp"
#include "runtime/sync.hpp"
#include "runtime/terminal.hpp"

namespace racker::runtime {
namespace {

struct NsFile {
  const char* type;
  const char* proc_name;
  int flag;
};
constexpr NsFile kJoinOrder[] = {
    {"user", "user", CLONE_NEWUSER},       {"ipc", "ipc", CLONE_NEWIPC},
    {"uts", "uts", CLONE_NEWUTS},          {"network", "net", CLONE_NEWNET},
    {"cgroup", "cgroup", CLONE_NEWCGROUP}, {"mount", "mnt", CLONE_NEWNS},
};

oci::Process build_process(const oci::Spec& spec, const ExecOptions& o) {
  if (!o.process_file.empty()) {
    auto text = read_file(o.process_file);
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(text);
    } catch (const nlohmann::json::exception& e) {
      throw Error(o.process_file + ": invalid JSON: " + json_error_text(e.what()), EINVAL);
    }
    try {
      return oci::parse_process(j, "process");
    } catch (const Error& e) {
      std::string msg = e.what();
      if (msg.starts_with("config.json: ")) msg = msg.substr(13);
      throw Error(o.process_file + ": " + msg, EINVAL);
    }
  }
  oci::Process p = spec.process ? *spec.process : oci::Process{};
  p.args = o.args;
  p.terminal = o.tty;
  p.console_size.reset();
  for (auto& kv : o.env) {
    if (kv.find('=') == std::string::npos) throw Error("invalid --env \"" + kv + "\"", EINVAL);
    std::string key = kv.substr(0, kv.find('=') + 1);
    std::erase_if(p.env, [&](const std::string& e) { return e.starts_with(key); });
    p.env.push_back(kv);
  }
  if (!o.cwd.empty()) p.cwd = o.cwd;
  if (!o.user.empty()) {
    auto parts = split(o.user, ':');
    auto uid = parse_uint(parts[0]);
    auto gid = parts.size() > 1 ? parse_uint(parts[1]) : std::optional<uint64_t>(0);
    if (!uid || !gid || parts.size() > 2)
      throw Error("invalid --user \"" + o.user + "\": use uid[:gid]", EINVAL);
    p.user.uid = static_cast<uint32_t>(*uid);
    p.user.gid = static_cast<uint32_t>(*gid);
  }
  if (o.no_new_privs) p.no_new_privileges = true;
  for (auto& name : o.cap_add) {
    auto cap = oci::capability_from_name(name);
    if (!cap) throw Error("unknown capability \"" + name + "\"", EINVAL);
    if (!p.capabilities) p.capabilities = oci::Capabilities{};
    for (auto* set :
         {&p.capabilities->bounding, &p.capabilities->effective, &p.capabilities->permitted,
          &p.capabilities->inheritable, &p.capabilities->ambient}) {
      if (!*set) *set = std::vector<int>{};
      (*set)->push_back(*cap);
    }
  }
  return p;
}

}  // namespace

int Runtime::exec(const std::string& id, const ExecOptions& o) {
  auto rec = load(id);
  auto status = status_of(rec);
  if (status != "running" && status != "created")
    throw Error("cannot exec in container \"" + id + "\": it is " + status, EINVAL);
  auto spec = oci::parse_spec(read_file(store_.dir(id) + "/config.json"));
  oci::Process proc = build_process(spec, o);
  if (proc.args.empty()) throw Error("exec: process.args must not be empty", EINVAL);
  if (proc.terminal && o.console_socket.empty() && o.detach)
    throw Error("cannot allocate a tty for a detached process without --console-socket", EINVAL);
  std::optional<SeccompProgram> seccomp;
  if (!o.seccomp_file.empty()) {
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(read_file(o.seccomp_file));
    } catch (const nlohmann::json::exception& e) {
      throw Error(o.seccomp_file + ": invalid JSON: " + json_error_text(e.what()), EINVAL);
    }
    try {
      seccomp = compile_seccomp(oci::parse_seccomp(j, "linux.seccomp"));
    } catch (const Error& e) {
      throw e.with_context(o.seccomp_file);
    }
  } else if (spec.linux_ && spec.linux_->seccomp) {
    seccomp = compile_seccomp(*spec.linux_->seccomp);
  }

  // open the namespaces of the init; skip those that are the same as ours
  std::string base = "/proc/" + std::to_string(rec.pid) + "/ns/";
  std::vector<std::pair<UniqueFd, int>> joins;
  bool in_user_ns = false;
  auto same_as_ours = [](const std::string& theirs, const char* name) {
    struct stat a, b;
    return ::stat(theirs.c_str(), &a) == 0 &&
           ::stat(("/proc/self/ns/" + std::string(name)).c_str(), &b) == 0 &&
           a.st_ino == b.st_ino && a.st_dev == b.st_dev;
  };
  for (auto& ns : kJoinOrder) {
    if (same_as_ours(base + ns.proc_name, ns.proc_name)) continue;
    UniqueFd fd(::open((base + ns.proc_name).c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) throw_errno("open " + base + ns.proc_name);
    if (ns.flag == CLONE_NEWUSER) in_user_ns = true;
    joins.emplace_back(std::move(fd), ns.flag);
  }
  if (in_user_ns && host_root()) {
    // root joins the namespaces that are not the container's own (a network namespace made
    // by the engine) before its user namespace: from inside it could not
    auto user = std::find_if(joins.begin(), joins.end(),
                             [](const auto& j) { return j.second == CLONE_NEWUSER; });
    auto mnt = std::find_if(joins.begin(), joins.end(),
                            [](const auto& j) { return j.second == CLONE_NEWNS; });
    if (user < mnt) std::rotate(user, user + 1, mnt);
  }
  UniqueFd own_pid_ns;
  // An ordinary user may join the container's pid namespace only from inside its user
  // namespace, which a process joins alone: an intermediate child joins both and forks the
  // process; it is reparented to us (a subreaper) when the intermediate leaves.
  UniqueFd late_user, late_pid;
  if (!same_as_ours(base + "pid", "pid")) {
    UniqueFd target(::open((base + "pid").c_str(), O_RDONLY | O_CLOEXEC));
    if (!target) throw_errno("open " + base + "pid");
    if (in_user_ns && !host_root()) {
      auto user = std::find_if(joins.begin(), joins.end(),
                               [](const auto& j) { return j.second == CLONE_NEWUSER; });
      late_user = std::move(user->first);
      joins.erase(user);
      late_pid = std::move(target);
      if (::prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0) throw_errno("become a subreaper");
    } else {
      own_pid_ns.reset(::open("/proc/self/ns/pid", O_RDONLY | O_CLOEXEC));
      if (::setns(target.get(), CLONE_NEWPID) != 0) throw_errno("join pid namespace");
    }
  }

  UniqueFd console_conn, console_local;
  if (proc.terminal) {
    if (!o.console_socket.empty()) {
      console_conn = connect_unix(o.console_socket);
    } else {
      int sp[2];
      if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) != 0) throw_errno("socketpair");
      console_local.reset(sp[0]);
      console_conn.reset(sp[1]);
    }
  }
  int sp[2];
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sp) != 0) throw_errno("socketpair");
  UniqueFd parent_sock(sp[0]), child_sock(sp[1]);
  std::string state =
      oci::to_json(oci::State{"1.2.0", id, status, rec.pid, rec.bundle, rec.annotations}).dump();

  pid_t pid = ::fork();
  if (pid == 0) {
    parent_sock.reset();
    try {
      ::prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);  // see container_init
      if (late_pid) {
        if (::setns(late_user.get(), CLONE_NEWUSER) != 0) throw_errno("join user namespace");
        if (::setns(late_pid.get(), CLONE_NEWPID) != 0) throw_errno("join pid namespace");
        pid_t child = ::fork();
        if (child < 0) throw_errno("fork");
        if (child > 0) {
          sync_send(child_sock.get(), SyncType::child_pid, std::to_string(child));
          _exit(0);
        }
        late_user.reset();
        late_pid.reset();
      }
      SyncMessage m;
      if (!sync_recv(child_sock.get(), &m) || m.type != SyncType::go)
        throw Error("lost contact with the runtime", EPIPE);
      for (auto& [fd, flag] : joins)
        if (::setns(fd.get(), flag) != 0) throw_errno("join namespace");
      for (auto& [fd, flag] : joins) fd.reset();
      if (in_user_ns) {
        if (::setresgid(0, 0, 0) != 0 || ::setresuid(0, 0, 0) != 0)
          throw_errno("setuid 0 in user namespace");
      }
      if (joins.empty() || joins.back().second != CLONE_NEWNS) {
        // same mount namespace as the host: at least enter the container's root
        if (::chroot(rec.rootfs.c_str()) != 0) throw_errno("chroot " + rec.rootfs);
      }
      if (proc.terminal) {
        int master = -1;
        std::string slave_path;
        if (int rc = open_pty(&master, &slave_path); rc < 0) throw_errno("open pty", -rc);
        UniqueFd mfd(master);
        UniqueFd slave(::open(slave_path.c_str(), O_RDWR | O_NOCTTY | O_CLOEXEC));
        if (!slave) throw_errno("open " + slave_path);
        if (!send_fd(console_conn.get(), mfd.get(), "console")) throw_errno("send pty master");
        console_conn.reset();
        ::setsid();
        if (::ioctl(slave.get(), TIOCSCTTY, 0) != 0) throw_errno("set controlling terminal");
        for (int i = 0; i < 3; ++i) ::dup2(slave.get(), i);
      }
      if (::chdir(proc.cwd.c_str()) != 0) throw_errno("chdir to cwd \"" + proc.cwd + "\"");
      char buf[4096];
      if (::getcwd(buf, sizeof buf) == nullptr || buf[0] != '/')
        throw Error("current working directory is outside of the container root", EPERM);
      find_executable(proc);
      for (auto& r : proc.rlimits) {
        struct rlimit lim = {r.soft, r.hard};
        if (::prlimit(0, static_cast<__rlimit_resource>(r.resource), &lim, nullptr) != 0)
          throw_errno("setrlimit " + r.type);
      }
      int stub_fd = make_exec_stub_fd();
      if (stub_fd < 0) throw_errno("create exec stub", -stub_fd);
      oci::Process payload = with_home(proc);
      ProcessSetup setup{&payload, seccomp ? &*seccomp : nullptr, o.preserve_fds, {}, state};
      finish_process_setup(setup);
      install_late_seccomp(setup);
      exec_process(payload, stub_fd);
    } catch (const std::exception& e) {
      send_error(child_sock.get(), e);
      _exit(126);
    }
  }
  int fork_err = errno;
  if (own_pid_ns) (void)::setns(own_pid_ns.get(), CLONE_NEWPID);
  if (pid < 0) throw_errno("fork", fork_err);
  child_sock.reset();
  console_conn.reset();
  if (late_pid) {
    // the intermediate's report, then its exit; its child is ours from then on
    SyncMessage m;
    bool got = sync_recv(parent_sock.get(), &m);
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    if (!got) throw Error("exec: the intermediate process died", ECHILD);
    if (m.type == SyncType::error) throw sync_error(m);
    auto child = m.type == SyncType::child_pid ? parse_uint(sync_text(m)) : std::nullopt;
    if (!child || *child == 0) throw Error("exec: no process from the intermediate", ECHILD);
    pid = static_cast<pid_t>(*child);
  }
  try {
    if (!rec.cgroup.is_null()) CgroupManager::load(rec.cgroup)->add_process(pid, rec.pid);
    sync_send(parent_sock.get(), SyncType::go);
    SyncMessage m;
    if (sync_recv(parent_sock.get(), &m) && m.type == SyncType::error) throw sync_error(m);
  } catch (const Error&) {
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
    throw;
  }
  if (!o.pid_file.empty()) write_file_atomic(o.pid_file, std::to_string(pid));
  if (o.detach) return 0;
  UniqueFd master;
  if (console_local) {
    int fd = recv_fd(console_local.get(), nullptr);
    if (fd >= 0) master.reset(fd);
  }
  if (master) {
    int pfd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
    relay_pty(master.get(), pfd, pid);
    if (pfd >= 0) ::close(pfd);
  }
  return wait_child_forwarding(pid);
}

}  // namespace racker::runtime
