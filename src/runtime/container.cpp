#include "runtime/container.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>
#include <optional>

#include "base/error.hpp"
#include "base/fd.hpp"
#include "base/fs.hpp"
#include "base/ids.hpp"
#include "base/log.hpp"
#include "base/strings.hpp"
#include "base/timing.hpp"
#include "runtime/cgroups.hpp"
#include "runtime/hooks.hpp"
#include "runtime/idmap.hpp"
#include "runtime/init.hpp"
#include "runtime/mounts.hpp"
#include "runtime/seccomp.hpp"
#include "runtime/sync.hpp"
#include "runtime/terminal.hpp"
#include "runtime/validate.hpp"

namespace racker::runtime {
namespace {

struct NsInfo {
  const char* type;
  const char* proc_name;
  int flag;
};
// Order matters when joining: user first, mount last (it changes what paths mean).
constexpr NsInfo kNamespaces[] = {
    {"user", "user", CLONE_NEWUSER},
    {"ipc", "ipc", CLONE_NEWIPC},
    {"uts", "uts", CLONE_NEWUTS},
    {"network", "net", CLONE_NEWNET},
    {"pid", "pid", CLONE_NEWPID},
    {"cgroup", "cgroup", CLONE_NEWCGROUP},
    {"time", "time", 0x80 /* CLONE_NEWTIME */},
    {"mount", "mnt", CLONE_NEWNS},
};

oci::State make_state(const std::string& id, const std::string& status, pid_t pid,
                      const std::string& bundle, const std::map<std::string, std::string>& ann) {
  oci::State s;
  s.id = id;
  s.status = status;
  s.pid = pid;
  s.bundle = bundle;
  s.annotations = ann;
  return s;
}

std::string state_json(const oci::State& s) {
  return oci::to_json(s).dump();
}

int open_pidfd(pid_t pid) {
  return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
}

// Waits up to timeout_ms for pid to die (any parent). True if it is gone.
bool wait_gone(pid_t pid, unsigned long long start_time, int timeout_ms) {
  int fd = open_pidfd(pid);
  if (fd < 0) return true;
  struct pollfd p = {fd, POLLIN, 0};
  int r = ::poll(&p, 1, timeout_ms);
  ::close(fd);
  if (r > 0) return true;
  return process_start_time(pid) != start_time;
}

void write_pid_file(const std::string& path, pid_t pid) {
  if (path.empty()) return;
  write_file_atomic(path, std::to_string(pid), 0644);
}

// What a create in progress has made so far, in <state dir>/creating.json until state.json
// replaces it: should the creating runtime die (kill -9), state and delete learn from it that
// nobody will finish, and what to kill and remove.
struct Creating {
  pid_t creator = 0;
  unsigned long long creator_start = 0;
  std::string bundle;
  pid_t init = 0;
  unsigned long long init_start = 0;
  nlohmann::json cgroup;          // CgroupManager::save() once the init is placed
  nlohmann::json cgroup_planned;  // before: where it would go (its leaves are ours)
};

std::string creating_json(const Creating& c) {
  nlohmann::json j = {{"creator", c.creator},
                      {"creator_start", c.creator_start},
                      {"bundle", c.bundle},
                      {"init", c.init},
                      {"init_start", c.init_start},
                      {"cgroup", c.cgroup},
                      {"cgroup_planned", c.cgroup_planned}};
  return j.dump();
}

void write_creating(const std::string& dir, const Creating& c) {
  write_file_atomic(dir + "/creating.json", creating_json(c), 0600);
}

std::optional<Creating> read_creating(const std::string& dir) {
  auto text = read_file_if_exists(dir + "/creating.json");
  if (!text) return std::nullopt;
  try {
    auto j = nlohmann::json::parse(*text);
    Creating c;
    c.creator = j.at("creator").get<pid_t>();
    c.creator_start = j.at("creator_start").get<unsigned long long>();
    c.bundle = j.value("bundle", "");
    c.init = j.value("init", 0);
    c.init_start = j.value("init_start", 0ULL);
    c.cgroup = j.value("cgroup", nlohmann::json());
    c.cgroup_planned = j.value("cgroup_planned", nlohmann::json());
    return c;
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

// A create whose runtime is gone: nobody will finish it.
bool abandoned(const std::string& dir) {
  auto c = read_creating(dir);
  if (!c) {
    // no record at all (the directory comes with one): a runtime of an older version, still
    // working or not; old enough, it is abandoned
    struct stat st;
    return ::stat(dir.c_str(), &st) == 0 && ::time(nullptr) - st.st_mtime > 60;
  }
  return process_start_time(c->creator) != c->creator_start || c->creator_start == 0;
}

// Kills and removes what an abandoned create made: the init (it may wait forever for a start
// that will not come) and the container's cgroups.
void clean_abandoned(const std::string& dir) {
  auto c = read_creating(dir);
  if (!c) return;
  if (c->init > 0 && c->init_start != 0 && process_start_time(c->init) == c->init_start)
    ::kill(c->init, SIGKILL);
  nlohmann::json saved = c->cgroup;
  if (saved.is_null() && c->cgroup_planned.is_object()) {
    // killed while placing the init: its own leaf directories may exist, nothing above
    saved = c->cgroup_planned;
    if (saved.contains("hierarchies") && saved["hierarchies"].is_array())
      for (auto& h : saved["hierarchies"])
        if (h.is_object() && h.contains("path")) h["created"] = nlohmann::json::array({h["path"]});
    if (saved.contains("unified") && saved["unified"].is_object() &&
        saved["unified"].contains("path"))
      saved["unified"]["created"] = nlohmann::json::array({saved["unified"]["path"]});
  }
  if (saved.is_null()) return;
  try {
    auto cg = CgroupManager::load(saved);
    for (int i = 0; i < 100; ++i) {
      auto pids = cg->pids();
      if (pids.empty()) break;
      for (pid_t p : pids) ::kill(p, SIGKILL);
      ::usleep(10000);
    }
    cg->destroy();
  } catch (const Error& e) {
    log::debug("clean up an abandoned create: " + std::string(e.what()));
  }
}

}  // namespace

int wait_child_forwarding(pid_t child) {
  return wait_forwarding(child, child);
}

// Waits for our child pid, forwarding the usual termination signals to `target`.
// Returns the exit status with 128+N for a signal.
int wait_forwarding(pid_t child, pid_t target, bool kill_on_interrupt, int* interrupted) {
  sigset_t set;
  sigemptyset(&set);
  for (int s : {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGCONT, SIGWINCH})
    sigaddset(&set, s);
  sigset_t old;
  ::sigprocmask(SIG_BLOCK, &set, &old);
  int sfd = ::signalfd(-1, &set, SFD_CLOEXEC);
  int pfd = open_pidfd(child);
  int status = 0;
  for (;;) {
    struct pollfd p[2] = {{pfd, POLLIN, 0}, {sfd, POLLIN, 0}};
    if (::poll(p, 2, -1) < 0 && errno != EINTR) break;
    if (p[1].revents & POLLIN) {
      struct signalfd_siginfo si;
      if (::read(sfd, &si, sizeof si) == sizeof si) {
        int sig = static_cast<int>(si.ssi_signo);
        bool ends = sig == SIGINT || sig == SIGTERM || sig == SIGHUP;
        if (kill_on_interrupt && ends && interrupted) *interrupted = sig;
        ::kill(target, kill_on_interrupt && ends ? SIGKILL : sig);
      }
    }
    if (p[0].revents & POLLIN) break;
  }
  while (::waitpid(child, &status, 0) < 0 && errno == EINTR) {
  }
  if (sfd >= 0) ::close(sfd);
  if (pfd >= 0) ::close(pfd);
  ::sigprocmask(SIG_SETMASK, &old, nullptr);
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return 1;
}

int parse_signal(const std::string& s) {
  if (auto n = parse_int(s)) {
    if (*n <= 0 || *n > 64) throw Error("invalid signal \"" + s + "\"", EINVAL);
    return static_cast<int>(*n);
  }
  std::string name = s;
  for (auto& c : name) c = static_cast<char>(toupper(c));
  if (name.starts_with("SIG")) name = name.substr(3);
  static const std::pair<const char*, int> kSigs[] = {
      {"HUP", SIGHUP},       {"INT", SIGINT},   {"QUIT", SIGQUIT},     {"ILL", SIGILL},
      {"TRAP", SIGTRAP},     {"ABRT", SIGABRT}, {"IOT", SIGIOT},       {"BUS", SIGBUS},
      {"FPE", SIGFPE},       {"KILL", SIGKILL}, {"USR1", SIGUSR1},     {"SEGV", SIGSEGV},
      {"USR2", SIGUSR2},     {"PIPE", SIGPIPE}, {"ALRM", SIGALRM},     {"TERM", SIGTERM},
      {"STKFLT", SIGSTKFLT}, {"CHLD", SIGCHLD}, {"CONT", SIGCONT},     {"STOP", SIGSTOP},
      {"TSTP", SIGTSTP},     {"TTIN", SIGTTIN}, {"TTOU", SIGTTOU},     {"URG", SIGURG},
      {"XCPU", SIGXCPU},     {"XFSZ", SIGXFSZ}, {"VTALRM", SIGVTALRM}, {"PROF", SIGPROF},
      {"WINCH", SIGWINCH},   {"IO", SIGIO},     {"POLL", SIGPOLL},     {"PWR", SIGPWR},
      {"SYS", SIGSYS}};
  for (auto& [n, v] : kSigs)
    if (name == n) return v;
  if (name.starts_with("RTMIN")) {
    int off = name.size() > 5 ? static_cast<int>(parse_int(name.substr(6)).value_or(-1)) : 0;
    if (off >= 0 && SIGRTMIN + off <= SIGRTMAX) return SIGRTMIN + off;
  }
  if (name.starts_with("RTMAX")) {
    int off = name.size() > 5 ? static_cast<int>(parse_int(name.substr(6)).value_or(-1)) : 0;
    if (off >= 0 && SIGRTMAX - off >= SIGRTMIN) return SIGRTMAX - off;
  }
  throw Error("unknown signal \"" + s + "\"", EINVAL);
}

namespace {

std::string proc_name_of(int flag) {
  for (auto& info : kNamespaces)
    if (info.flag == flag) return info.proc_name;
  return "";
}

// What the runtime's thread sets up for the clone of an init that creates a user namespace,
// undone when it goes: the namespaces joined by path (parent_joins) and, with rootfs_parent,
// the working directory (this thread gets its own first: CLONE_FS). Throws racker::Error.
class ThreadSetup {
 public:
  ThreadSetup(const std::vector<NamespaceJoin>& joins, int rootfs_parent) {
    try {
      for (auto& j : joins) {
        std::string own = "/proc/thread-self/ns/" + proc_name_of(j.nstype);
        UniqueFd fd(::open(own.c_str(), O_RDONLY | O_CLOEXEC));
        if (!fd) throw_errno("open " + own);
        if (::setns(j.fd, j.nstype) != 0) throw_errno("join " + j.type + " namespace");
        restore_.push_back({std::move(fd), j.nstype});
      }
      if (rootfs_parent >= 0) {
        static thread_local bool own_fs = false;
        if (!own_fs && ::unshare(CLONE_FS) != 0) throw_errno("unshare CLONE_FS");
        own_fs = true;
        cwd_.reset(::open(".", O_PATH | O_DIRECTORY | O_CLOEXEC));
        if (!cwd_) throw_errno("open the working directory");
        if (::fchdir(rootfs_parent) != 0) throw_errno("chdir to the rootfs' parent");
      }
    } catch (...) {
      undo();
      throw;
    }
  }
  ~ThreadSetup() { undo(); }
  ThreadSetup(const ThreadSetup&) = delete;
  ThreadSetup& operator=(const ThreadSetup&) = delete;

 private:
  void undo() noexcept {
    if (cwd_ && ::fchdir(cwd_.get()) != 0) log::warn("cannot return to the working directory");
    cwd_.reset();
    for (auto& [fd, type] : restore_)
      if (::setns(fd.get(), type) != 0) log::warn("cannot return to the runtime's namespaces");
    restore_.clear();
  }
  std::vector<std::pair<UniqueFd, int>> restore_;
  UniqueFd cwd_;
};

}  // namespace

struct Runtime::Created {
  pid_t pid = 0;
  UniqueFd pty_master;
  ContainerRecord rec;
};

Runtime::Runtime(std::string state_root) : store_(std::move(state_root)) {}

ContainerRecord Runtime::load(const std::string& id) const {
  validate_id(id);
  if (!store_.exists(id)) throw Error("container \"" + id + "\" does not exist", ENOENT);
  auto rec = store_.load(id);
  if (!rec && abandoned(store_.dir(id)))
    throw Error("container \"" + id + "\" was left half-created by a runtime that died: delete it",
                ESRCH);
  if (!rec) throw Error("container \"" + id + "\" is still being created", EBUSY);
  return *rec;
}

std::string Runtime::status_of(const ContainerRecord& rec) const {
  if (process_start_time(rec.pid) != rec.start_time || rec.start_time == 0) return "stopped";
  if (path_exists(store_.dir(rec.id) + "/exec.fifo")) return "created";
  if (!rec.cgroup.is_null()) {
    try {
      if (CgroupManager::load(rec.cgroup)->frozen()) return "paused";
    } catch (const Error&) {
    }
  }
  return "running";
}

Runtime::Created Runtime::create_container(const std::string& id, const CreateOptions& opts,
                                           bool foreground) {
  validate_id(id);
  char bundle_buf[PATH_MAX];
  if (!::realpath(opts.bundle.c_str(), bundle_buf)) throw_errno("bundle \"" + opts.bundle + "\"");
  std::string bundle = bundle_buf;
  std::string config_text;
  {
    auto t = read_file_if_exists(bundle + "/config.json");
    if (!t) throw Error("open " + bundle + "/config.json: no such file or directory", ENOENT);
    config_text = *t;
  }
  oci::Spec spec = oci::parse_spec(config_text);
  std::string rootfs = validate_spec(spec, bundle);
  std::optional<SeccompProgram> seccomp;
  if (spec.linux_ && spec.linux_->seccomp) seccomp = compile_seccomp(*spec.linux_->seccomp);
  const oci::Process& proc = *spec.process;
  if (proc.terminal && opts.console_socket.empty() && !foreground)
    throw Error("cannot allocate a tty for a detached container without --console-socket", EINVAL);

  std::unique_ptr<CgroupManager> cgroup =
      CgroupManager::create(spec.linux_ ? spec.linux_->cgroups_path : "", id, opts.systemd_cgroup);
  std::optional<oci::Resources> res_with_devices;
  if (spec.linux_ && spec.linux_->resources) {
    // the devices the spec creates must stay usable under the device controller
    res_with_devices = *spec.linux_->resources;
    auto& rules = res_with_devices->devices;
    for (auto& rule : device_rules_for(spec.linux_->devices)) {
      // an allow rule already there, with no deny after it, need not be written again (each
      // rule is a write to the device controller)
      auto same = [&](const oci::DeviceRule& r) {
        return r.allow && r.type == rule.type && r.major == rule.major && r.minor == rule.minor &&
               r.access == rule.access;
      };
      auto last_deny = std::find_if(rules.rbegin(), rules.rend(),
                                    [](const oci::DeviceRule& r) { return !r.allow; });
      if (std::find_if(rules.rbegin(), last_deny, same) == last_deny) rules.push_back(rule);
    }
  }
  const oci::Resources* resources = res_with_devices ? &*res_with_devices : nullptr;
  if (resources) cgroup->validate(*resources);

  // Namespaces: which to create in clone(), which to join, which to unshare later.
  InitContext ctx;
  ctx.spec = &spec;
  ctx.process = &proc;
  ctx.rootfs = rootfs;
  ctx.id = id;
  ctx.no_pivot = opts.no_pivot;
  ctx.no_new_keyring = opts.no_new_keyring;
  ctx.preserve_fds = opts.preserve_fds;
  int clone_flags = 0;
  UniqueFd pid_ns_join;
  std::vector<UniqueFd> join_fds;
  bool user_joined = false;
  bool has_pid_ns = false;
  if (spec.linux_) {
    auto* u = spec.linux_->find_namespace("user");
    user_joined = u && !u->path.empty();
    for (auto& info : kNamespaces) {
      auto* ns = spec.linux_->find_namespace(info.type);
      if (!ns) continue;
      if (info.flag == CLONE_NEWNS) ctx.has_mount_ns = true;
      if (info.flag == CLONE_NEWUTS) ctx.has_uts_ns = true;
      if (info.flag == CLONE_NEWUSER) ctx.in_user_ns = true;
      if (info.flag == CLONE_NEWPID) has_pid_ns = true;
      if (!ns->path.empty()) {
        UniqueFd fd(::open(ns->path.c_str(), O_RDONLY | O_CLOEXEC));
        if (!fd) throw_errno("open " + std::string(info.type) + " namespace " + ns->path);
        if (info.flag == CLONE_NEWPID) {
          pid_ns_join = std::move(fd);
        } else {
          ctx.joins.push_back({fd.get(), info.flag, info.type});
          join_fds.push_back(std::move(fd));
        }
      } else if (info.flag == CLONE_NEWCGROUP) {
        ctx.new_cgroup_ns = true;
      } else if (user_joined && info.flag != CLONE_NEWUSER) {
        ctx.unshare_flags |= info.flag;
      } else {
        clone_flags |= info.flag;
      }
    }
  }
  bool user_created = (clone_flags & CLONE_NEWUSER) != 0;
  // A new user namespace: the namespaces the init joins by path (e.g. a network namespace
  // made by the engine, owned by the host's user namespace) can no longer be joined from
  // inside it. The runtime's thread joins them before the clone, which inherits them (as
  // runc's nsexec joins before it unshares). The mount namespace stays with the init.
  std::vector<NamespaceJoin> parent_joins;
  if (user_created)
    std::erase_if(ctx.joins, [&](const NamespaceJoin& j) {
      if (j.nstype == CLONE_NEWNS || j.nstype == CLONE_NEWUSER) return false;
      parent_joins.push_back(j);
      return true;
    });
  // ...owned by the host uid the container's root maps to, when the runtime is root: per-user
  // kernel limits (inotify instances, keys, ...) are charged to each namespace's owner, so
  // containers with ranges of their own stop sharing root's (and each other's) budget.
  std::optional<std::pair<uid_t, gid_t>> ns_owner;
  if (user_created && host_root()) {
    auto u = host_id_of_root(spec.linux_->uid_mappings);
    auto g = host_id_of_root(spec.linux_->gid_mappings);
    if (u && *u != 0) ns_owner = {*u, g.value_or(*u)};
  }
  // bind sources and id-mapped mounts, as detached trees the init attaches: inside a user
  // namespace it may not reach them by path
  // (by root: an unprivileged caller's container reaches what the caller reaches)
  std::vector<UniqueFd> sources = open_mount_sources(spec, user_created && host_root());
  ctx.sources = &sources;
  ctx.rootfs_host = rootfs;
  ctx.dumpable_until_go = user_created && !host_root();
  // in a rootless racker's namespace the runtime is root without the host's powers: devices
  // are bound, not made, and mount flags the host locked stay
  if (!host_root()) ctx.in_user_ns = true;
  UniqueFd rootfs_parent;
  if (user_created && ctx.has_mount_ns) {
    // the init starts in the rootfs' parent directory and reaches the rootfs through its
    // working directory, so that the directories above (a 0700 store) need not be searchable
    // by the container's root
    auto slash = rootfs.rfind('/');
    std::string parent = slash == 0 ? "/" : rootfs.substr(0, slash);
    rootfs_parent.reset(::open(parent.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    if (!rootfs_parent) throw_errno("open " + parent);
    ctx.rootfs = "/proc/self/cwd/" + rootfs.substr(slash + 1);
  }
  if (!ctx.has_mount_ns) {
    // no mount namespace: the container shares the host's; only chroot is possible
    log::debug("container " + id + " has no mount namespace");
  }

  timing::mark("rt_prepare");
  Creating creating;
  creating.creator = ::getpid();
  creating.creator_start = process_start_time(creating.creator);
  creating.bundle = bundle;
  creating.cgroup_planned = cgroup->save();
  store_.create_dir(id, "creating.json", creating_json(creating));
  std::string dir = store_.dir(id);
  pid_t pid = -1;
  bool applied_cgroup = false;
  try {
    write_file_atomic(dir + "/config.json", config_text, 0600);
    // the init opens it after switching to the container's user: writable by anyone, the
    // state dir (0711) keeps others from finding it
    std::string fifo = dir + "/exec.fifo";
    if (::mkfifo(fifo.c_str(), 0622) != 0 || ::chmod(fifo.c_str(), 0622) != 0)
      throw_errno("mkfifo exec.fifo");
    UniqueFd dirfd(::open(dir.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    if (!dirfd) throw_errno("open " + dir);
    ctx.state_dir_fd = dirfd.get();

    UniqueFd console_conn, console_local;
    if (proc.terminal) {
      if (!opts.console_socket.empty()) {
        console_conn = connect_unix(opts.console_socket);
      } else {
        int sp[2];
        if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) != 0)
          throw_errno("socketpair");
        console_local.reset(sp[0]);
        console_conn.reset(sp[1]);
      }
      ctx.console_fd = console_conn.get();
    }

    int sp[2];
    if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sp) != 0) throw_errno("socketpair");
    UniqueFd parent_sock(sp[0]), child_sock(sp[1]);
    ctx.sync_fd = child_sock.get();
    ctx.seccomp = seccomp ? &*seccomp : nullptr;

    UniqueFd own_pid_ns;
    if (pid_ns_join) {
      own_pid_ns.reset(::open("/proc/self/ns/pid", O_RDONLY | O_CLOEXEC));
      if (::setns(pid_ns_join.get(), CLONE_NEWPID) != 0) throw_errno("join pid namespace");
    }
    {
      ThreadSetup setup(parent_joins, rootfs_parent.get());
      std::optional<EffectiveIds> owner;
      if (ns_owner) owner.emplace(ns_owner->first, ns_owner->second);
      pid =
          static_cast<pid_t>(::syscall(SYS_clone, static_cast<unsigned long>(clone_flags) | SIGCHLD,
                                       nullptr, nullptr, nullptr, 0));
      if (pid == 0) {
        parent_sock.reset();
        container_init(ctx);
      }
    }
    int clone_err = errno;
    if (own_pid_ns) (void)::setns(own_pid_ns.get(), CLONE_NEWPID);
    if (pid < 0) throw_errno("clone container init", clone_err);
    child_sock.reset();
    console_conn.reset();
    timing::mark("rt_clone");
    creating.init = pid;
    creating.init_start = process_start_time(pid);
    write_creating(dir, creating);

    if (user_created) {
      write_id_maps(pid, spec.linux_->uid_mappings, spec.linux_->gid_mappings);
    }
    if (proc.oom_score_adj)
      write_file("/proc/" + std::to_string(pid) + "/oom_score_adj",
                 std::to_string(*proc.oom_score_adj));
    applied_cgroup = true;
    cgroup->apply(pid, resources);
    if (ns_owner) cgroup->delegate(ns_owner->first, ns_owner->second);
    creating.cgroup = cgroup->save();
    write_creating(dir, creating);
    timing::mark("rt_cgroup");
    sync_send(parent_sock.get(), SyncType::go);

    SyncMessage m;
    for (;;) {
      if (!sync_recv(parent_sock.get(), &m))
        throw Error("container init exited during setup", ECHILD);
      if (m.type == SyncType::error) throw sync_error(m);
      if (m.type == SyncType::run_hooks) {
        std::string st = state_json(make_state(id, "created", pid, bundle, spec.annotations));
        run_hooks(spec.hooks.prestart, "prestart", st);
        run_hooks(spec.hooks.create_runtime, "createRuntime", st);
        sync_send(parent_sock.get(), SyncType::hooks_done, st);
        continue;
      }
      if (m.type == SyncType::ready) break;
    }
    timing::mark("rt_init_setup");
    Created out;
    if (console_local) {
      int master = recv_fd(console_local.get(), nullptr);
      if (master < 0) throw_errno("receive pty master");
      out.pty_master.reset(master);
    }
    ContainerRecord rec;
    rec.id = id;
    rec.bundle = bundle;
    rec.rootfs = rootfs;
    rec.pid = pid;
    rec.start_time = process_start_time(pid);
    rec.created = now_rfc3339();
    rec.owner = user_name(::geteuid());
    rec.annotations = spec.annotations;
    rec.cgroup = cgroup->save();
    rec.has_pid_ns = has_pid_ns;
    if (rec.start_time == 0) throw Error("container init exited during setup", ECHILD);
    store_.save(rec);
    ::unlink((dir + "/creating.json").c_str());
    write_pid_file(opts.pid_file, pid);
    out.pid = pid;
    out.rec = rec;
    return out;
  } catch (const Error& e) {
    if (pid > 0) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
    }
    if (applied_cgroup) cgroup->destroy();
    store_.remove(id);
    throw;
  }
}

void Runtime::create(const std::string& id, const CreateOptions& opts) {
  create_container(id, opts, false);
}

void Runtime::release_init(const std::string& id, const ContainerRecord& rec) {
  std::string fifo = store_.dir(id) + "/exec.fifo";
  UniqueFd fd(::open(fifo.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC));
  if (!fd) throw_errno("open " + fifo);
  for (;;) {
    struct pollfd p = {fd.get(), POLLIN, 0};
    int r = ::poll(&p, 1, 100);
    if (r > 0) {
      char c;
      ssize_t n = ::read(fd.get(), &c, 1);
      if (n == 1) break;
      if (n < 0 && errno == EAGAIN) continue;
      throw Error("container \"" + id + "\" init exited before start", ECHILD);
    }
    if (r < 0 && errno != EINTR) throw_errno("poll exec.fifo");
    if (process_start_time(rec.pid) != rec.start_time)
      throw Error("container \"" + id + "\" init exited before start", ECHILD);
  }
  ::unlink(fifo.c_str());
  // the init keeps its end open until execve (close-on-exec): wait for end-of-file
  for (;;) {
    struct pollfd p = {fd.get(), POLLIN, 0};
    int r = ::poll(&p, 1, 100);
    if (r > 0) {
      char c;
      ssize_t n = ::read(fd.get(), &c, 1);
      if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) break;
      continue;
    }
    if (r < 0 && errno != EINTR) break;
    if (process_start_time(rec.pid) != rec.start_time) break;
  }
}

void Runtime::start(const std::string& id) {
  auto rec = load(id);
  auto status = status_of(rec);
  if (status != "created")
    throw Error("cannot start container \"" + id + "\": it is " + status + ", not created", EINVAL);
  release_init(id, rec);
  auto spec_text = read_file_if_exists(store_.dir(id) + "/config.json");
  if (spec_text) {
    auto spec = oci::parse_spec(*spec_text);
    run_hooks(spec.hooks.poststart, "poststart",
              state_json(make_state(id, "running", rec.pid, rec.bundle, rec.annotations)), true);
  }
}

int Runtime::run(const std::string& id, const CreateOptions& opts, bool detach) {
  Created c = create_container(id, opts, !detach);
  if (c.pty_master) {
    // the payload must see our window size from its first instruction on
    copy_window_size(c.pty_master.get());
  }
  try {
    release_init(id, c.rec);
    auto spec = oci::parse_spec(read_file(store_.dir(id) + "/config.json"));
    run_hooks(spec.hooks.poststart, "poststart",
              state_json(make_state(id, "running", c.pid, c.rec.bundle, c.rec.annotations)), true);
  } catch (const Error&) {
    ::kill(c.pid, SIGKILL);
    ::waitpid(c.pid, nullptr, 0);
    cleanup(id, c.rec, true);
    throw;
  }
  timing::mark("rt_started");
  if (detach) return 0;
  int status;
  if (c.pty_master) {
    int pfd = open_pidfd(c.pid);
    relay_pty(c.pty_master.get(), pfd, c.pid);
    if (pfd >= 0) ::close(pfd);
  }
  int interrupted = 0;
  status = wait_forwarding(c.pid, c.pid, opts.kill_on_interrupt, &interrupted);
  timing::mark("rt_exited");
  if (!c.rec.has_pid_ns) {
    // without a pid namespace, children of the payload may linger: end them
    try {
      for (pid_t p : CgroupManager::load(c.rec.cgroup)->pids()) ::kill(p, SIGKILL);
    } catch (const Error&) {
    }
  }
  cleanup(id, c.rec, true);
  if (interrupted)
    throw Error::interrupted(
        "container " + id + ": interrupted by signal " + std::to_string(interrupted), interrupted);
  return status;
}

oci::State Runtime::state(const std::string& id) const {
  auto rec = load(id);
  auto status = status_of(rec);
  return make_state(id, status, status == "stopped" ? 0 : rec.pid, rec.bundle, rec.annotations);
}

std::vector<ContainerInfo> Runtime::list() const {
  std::vector<ContainerInfo> out;
  for (auto& id : store_.ids()) {
    std::optional<ContainerRecord> rec;
    try {
      rec = store_.load(id);
    } catch (const Error&) {
    }
    ContainerInfo info;
    if (!rec) {
      info.state = make_state(id, abandoned(store_.dir(id)) ? "stopped" : "creating", 0, "", {});
    } else {
      auto status = status_of(*rec);
      info.state =
          make_state(id, status, status == "stopped" ? 0 : rec->pid, rec->bundle, rec->annotations);
      info.rootfs = rec->rootfs;
      info.created = rec->created;
      info.owner = rec->owner;
    }
    out.push_back(info);
  }
  return out;
}

void Runtime::kill(const std::string& id, int sig, bool all) {
  auto rec = load(id);
  auto status = status_of(rec);
  if (status == "stopped") throw Error("container \"" + id + "\" is not running", ESRCH);
  if (all && !rec.cgroup.is_null()) {
    auto cg = CgroupManager::load(rec.cgroup);
    for (pid_t p : cg->pids()) ::kill(p, sig);
    if (status == "paused") cg->thaw();
    return;
  }
  if (::kill(rec.pid, sig) != 0) throw_errno("kill container \"" + id + "\"");
  if (status == "paused" && sig == SIGKILL) CgroupManager::load(rec.cgroup)->thaw();
}

void Runtime::cleanup(const std::string& id, const ContainerRecord& rec, bool run_poststop) {
  if (!rec.cgroup.is_null()) {
    try {
      CgroupManager::load(rec.cgroup)->destroy();
    } catch (const Error& e) {
      log::warn("remove cgroup of " + id + ": " + e.what());
    }
  }
  if (run_poststop) {
    try {
      auto text = read_file_if_exists(store_.dir(id) + "/config.json");
      if (text) {
        auto spec = oci::parse_spec(*text);
        run_hooks(spec.hooks.poststop, "poststop",
                  state_json(make_state(id, "stopped", 0, rec.bundle, rec.annotations)), true);
      }
    } catch (const Error& e) {
      log::warn(e.what());
    }
  }
  store_.remove(id);
}

void Runtime::remove(const std::string& id, bool force) {
  validate_id(id);
  if (force) store_.remove_partial(id);
  if (!store_.exists(id)) throw Error("container \"" + id + "\" does not exist", ENOENT);
  auto rec = store_.load(id);
  if (!rec) {
    std::string dir = store_.dir(id);
    if (!force && !abandoned(dir))
      throw Error("container \"" + id + "\" is still being created", EBUSY);
    clean_abandoned(dir);
    store_.remove(id);
    return;
  }
  auto status = status_of(*rec);
  if (status != "stopped") {
    if (!force)
      throw Error("cannot delete container \"" + id + "\" that is not stopped: " + status, EBUSY);
    std::unique_ptr<CgroupManager> cg;
    if (!rec->cgroup.is_null()) cg = CgroupManager::load(rec->cgroup);
    ::kill(rec->pid, SIGKILL);
    if (cg) {
      for (pid_t p : cg->pids()) ::kill(p, SIGKILL);
      if (status == "paused") cg->thaw();
    }
    if (!wait_gone(rec->pid, rec->start_time, 10000))
      throw Error("container \"" + id + "\" did not die after SIGKILL", EBUSY);
    if (cg) {
      // processes outside a pid namespace may outlive the init: give them a moment
      for (int i = 0; i < 100 && !cg->pids().empty(); ++i) {
        for (pid_t p : cg->pids()) ::kill(p, SIGKILL);
        ::usleep(10000);
      }
    }
  }
  cleanup(id, *rec, true);
}

std::vector<pid_t> Runtime::pids(const std::string& id) const {
  auto rec = load(id);
  if (status_of(rec) == "stopped") return {};
  if (!rec.cgroup.is_null()) {
    auto p = CgroupManager::load(rec.cgroup)->pids();
    if (!p.empty()) return p;
  }
  return {rec.pid};
}

void Runtime::pause(const std::string& id) {
  auto rec = load(id);
  auto status = status_of(rec);
  if (status != "running")
    throw Error("cannot pause container \"" + id + "\": it is " + status, EINVAL);
  CgroupManager::load(rec.cgroup)->freeze();
}

void Runtime::resume(const std::string& id) {
  auto rec = load(id);
  auto status = status_of(rec);
  if (status != "paused")
    throw Error("cannot resume container \"" + id + "\": it is " + status + ", not paused", EINVAL);
  CgroupManager::load(rec.cgroup)->thaw();
}

}  // namespace racker::runtime
