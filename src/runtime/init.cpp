#include "runtime/init.hpp"

#include <fcntl.h>
#include <grp.h>
#include <linux/close_range.h>
#include <sched.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/personality.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "base/error.hpp"
#include "base/fd.hpp"
#include "base/fs.hpp"
#include "base/log.hpp"
#include "base/strings.hpp"
#include "runtime/caps.hpp"
#include "runtime/hooks.hpp"
#include "runtime/mounts.hpp"
#include "runtime/sync.hpp"
#include "runtime/terminal.hpp"

extern "C" const char racker_exec_stub[];
extern "C" const char racker_exec_stub_end[];

namespace racker::runtime {
namespace {

void check(int rc, const std::string& what) {
  if (rc != 0) throw_errno(what);
}

void wait_for(int fd, SyncType want, SyncMessage* m) {
  if (!sync_recv(fd, m)) throw Error("lost contact with the runtime", EPIPE);
  if (m->type != want) throw Error("unexpected message from the runtime", EPROTO);
}

void apply_sysctl(const oci::Spec& spec) {
  if (!spec.linux_) return;
  for (auto& [key, value] : spec.linux_->sysctl) {
    std::string path = "/proc/sys/" + key;
    for (size_t i = 10; i < path.size(); ++i)
      if (path[i] == '.') path[i] = '/';
    try {
      write_file(path, value);
    } catch (const Error& e) {
      throw e.with_context("sysctl " + key);
    }
  }
}

void apply_rlimits(const oci::Process& p) {
  for (auto& r : p.rlimits) {
    struct rlimit lim = {r.soft, r.hard};
    if (::prlimit(0, static_cast<__rlimit_resource>(r.resource), &lim, nullptr) != 0)
      throw_errno("setrlimit " + r.type + " soft=" + std::to_string(r.soft) +
                  " hard=" + std::to_string(r.hard));
  }
}

void apply_personality(const oci::Spec& spec) {
  if (!spec.linux_ || !spec.linux_->personality) return;
  unsigned long persona = spec.linux_->personality->domain == "LINUX32" ? PER_LINUX32 : PER_LINUX;
  if (::personality(persona) < 0) throw_errno("personality");
}

void setup_terminal(const InitContext& ctx) {
  int master = -1;
  std::string slave_path;
  int rc = open_pty(&master, &slave_path);
  if (rc < 0) throw_errno("open pty", -rc);
  UniqueFd m(master);
  UniqueFd slave(::open(slave_path.c_str(), O_RDWR | O_NOCTTY | O_CLOEXEC));
  if (!slave) throw_errno("open " + slave_path);
  if (ctx.process->console_size) {
    struct winsize ws {};
    ws.ws_row = static_cast<unsigned short>(ctx.process->console_size->height);
    ws.ws_col = static_cast<unsigned short>(ctx.process->console_size->width);
    ::ioctl(slave.get(), TIOCSWINSZ, &ws);
  }
  if (ctx.has_mount_ns) setup_console(slave_path);
  if (!send_fd(ctx.console_fd, m.get(), "console"))
    throw_errno("send pty master to console socket");
  ::close(ctx.console_fd);
  ::setsid();
  if (::ioctl(slave.get(), TIOCSCTTY, 0) != 0) throw_errno("set controlling terminal");
  for (int i = 0; i < 3; ++i)
    if (::dup2(slave.get(), i) < 0) throw_errno("dup2 pty");
}

void verify_cwd() {
  char buf[4096];
  if (::getcwd(buf, sizeof buf) == nullptr) {
    if (errno == ENOENT)
      throw Error("current working directory is outside of the container root", EPERM);
    return;  // e.g. blocked by seccomp: nothing we can check
  }
  if (buf[0] != '/')
    throw Error("current working directory is outside of the container root", EPERM);
}

}  // namespace

std::string find_executable(const oci::Process& process) {
  if (process.args.empty()) throw Error("config.json: process.args: must not be empty", EINVAL);
  const std::string& name = process.args[0];
  if (name.find('/') != std::string::npos) {
    struct stat st;
    if (::stat(name.c_str(), &st) != 0) {
      int err = errno;
      throw Error("exec: \"" + name + "\": stat " + name + ": " + std::strerror(err), err,
                  err == ENOENT ? ErrorKind::command_not_found : ErrorKind::cannot_execute);
    }
    if (S_ISDIR(st.st_mode))
      throw Error("exec: \"" + name + "\": is a directory: permission denied", EACCES,
                  ErrorKind::cannot_execute);
    if (::access(name.c_str(), X_OK) != 0)
      throw Error("exec: \"" + name + "\": permission denied", EACCES, ErrorKind::cannot_execute);
    return name;
  }
  std::string path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
  for (auto& e : process.env)
    if (e.starts_with("PATH=")) path = e.substr(5);
  for (auto& dir : split(path, ':')) {
    std::string cand = (dir.empty() ? "." : dir) + "/" + name;
    struct stat st;
    if (::stat(cand.c_str(), &st) == 0 && S_ISREG(st.st_mode) && ::access(cand.c_str(), X_OK) == 0)
      return cand;
  }
  throw Error("exec: \"" + name + "\": executable file not found in $PATH", ENOENT,
              ErrorKind::command_not_found);
}

oci::Process with_home(const oci::Process& process) {
  // the last HOME= decides, as with setenv in order
  auto last = std::find_if(process.env.rbegin(), process.env.rend(),
                           [](const std::string& e) { return e.starts_with("HOME="); });
  if (last != process.env.rend() && last->size() > 5) return process;
  std::string home = "/";
  // a regular file only (a FIFO would block), read as root before the user changes
  UniqueFd fd(::open("/etc/passwd", O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK));
  struct stat st;
  if (fd && ::fstat(fd.get(), &st) == 0 && S_ISREG(st.st_mode)) {
    std::string text;
    char buf[8192];
    ssize_t n;
    while (text.size() < (16u << 20) &&
           ((n = ::read(fd.get(), buf, sizeof buf)) > 0 || (n < 0 && errno == EINTR)))
      if (n > 0) text.append(buf, static_cast<size_t>(n));
    for (auto& line : split(text, '\n')) {
      auto f = split(trim(line), ':');
      if (f.size() > 5 && parse_uint(f[2]) == process.user.uid) {
        if (!f[5].empty()) home = f[5];
        break;
      }
    }
  }
  oci::Process out = process;
  std::erase_if(out.env, [](const std::string& e) { return e.starts_with("HOME="); });
  out.env.push_back("HOME=" + home);
  return out;
}

void finish_process_setup(const ProcessSetup& s) {
  const oci::Process& p = *s.process;
  const char* what = "";
  // Before seccomp: the profile may well forbid close_range.
  // Nothing of the runtime's may reach the container process (CVE-2024-21626 class)
  unsigned first = 3 + static_cast<unsigned>(s.preserve_fds);
  ::syscall(SYS_close_range, first, ~0U, CLOSE_RANGE_CLOEXEC);
  for (int fd : s.keep_fds) {
    int flags = ::fcntl(fd, F_GETFD);
    if (flags >= 0) ::fcntl(fd, F_SETFD, flags & ~FD_CLOEXEC);
  }
  for (int fd = 3; fd < static_cast<int>(first); ++fd) {
    int flags = ::fcntl(fd, F_GETFD);
    if (flags >= 0) ::fcntl(fd, F_SETFD, flags & ~FD_CLOEXEC);
  }
  if (p.no_new_privileges) check(::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "set no_new_privs");
  // without no_new_privs, loading a filter needs CAP_SYS_ADMIN: do it while we have it
  int listener = -1;
  if (s.seccomp && !p.no_new_privileges) {
    listener = install_seccomp(*s.seccomp);
    if (listener < 0) throw_errno("install seccomp filter", -listener);
  }
  oci::Capabilities caps;
  if (p.capabilities) caps = *p.capabilities;
  if (int rc = drop_bounding(caps, &what); rc < 0) throw_errno(what, -rc);
  std::vector<gid_t> groups(p.user.additional_gids.begin(), p.user.additional_gids.end());
  if (::setgroups(groups.size(), groups.data()) != 0 && errno != EPERM) throw_errno("setgroups");
  check(::prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0), "keep capabilities");
  if (::setresgid(p.user.gid, p.user.gid, p.user.gid) != 0)
    throw_errno("setgid " + std::to_string(p.user.gid));
  if (::setresuid(p.user.uid, p.user.uid, p.user.uid) != 0)
    throw_errno("setuid " + std::to_string(p.user.uid));
  if (p.capabilities) {
    if (int rc = apply_capabilities(caps, &what); rc < 0) throw_errno(what, -rc);
  }
  ::prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0);
  if (p.user.umask) ::umask(*p.user.umask);
  if (listener > 0 && s.seccomp->wants_listener) {
    send_seccomp_listener(listener, s.seccomp->listener_path, s.state_json);
    ::close(listener);
  }
}

void install_late_seccomp(const ProcessSetup& s) {
  if (!s.seccomp || !s.process->no_new_privileges) return;
  int listener = install_seccomp(*s.seccomp);
  if (listener < 0) throw_errno("install seccomp filter", -listener);
  if (listener > 0 && s.seccomp->wants_listener) {
    send_seccomp_listener(listener, s.seccomp->listener_path, s.state_json);
    ::close(listener);
  }
}

int make_exec_stub_fd() {
  int fd = static_cast<int>(
      ::syscall(SYS_memfd_create, "racker-exec-stub", MFD_CLOEXEC | MFD_ALLOW_SEALING));
  if (fd < 0) return -errno;
  size_t len = static_cast<size_t>(racker_exec_stub_end - racker_exec_stub);
  if (!write_all(fd, racker_exec_stub, len) ||
      ::fcntl(fd, F_ADD_SEALS, F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE) != 0) {
    int e = errno;
    ::close(fd);
    return -e;
  }
  return fd;
}

void exec_process(const oci::Process& process, int stub_fd) {
  std::string path = find_executable(process);
  std::vector<char*> argv, envp;
  static char marker[] = "racker-exec-stub";  // the stub checks it (see exec_stub.S)
  if (stub_fd >= 0) {
    argv.push_back(marker);
    argv.push_back(const_cast<char*>(path.c_str()));
  }
  for (auto& a : process.args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  for (auto& e : process.env) envp.push_back(const_cast<char*>(e.c_str()));
  envp.push_back(nullptr);
  ::signal(SIGPIPE, SIG_DFL);
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  if (stub_fd >= 0) {
    ::syscall(SYS_execveat, stub_fd, "", argv.data(), envp.data(), AT_EMPTY_PATH);
    // a seccomp profile may allow execve but not execveat: go through /proc instead
    std::string via_proc = "/proc/self/fd/" + std::to_string(stub_fd);
    ::execve(via_proc.c_str(), argv.data(), envp.data());
    argv.erase(argv.begin(), argv.begin() + 2);
  }
  ::execve(path.c_str(), argv.data(), envp.data());
  throw_errno("exec " + path);
}

void container_init(const InitContext& ctx) {
  const oci::Spec& spec = *ctx.spec;
  const oci::Process& proc = *ctx.process;
  bool ready_sent = false;
  try {
    // until execve, /proc/self/exe is the runtime's binary: keep container processes away
    // from it (CVE-2019-5736); execve makes the payload dumpable again
    if (!ctx.dumpable_until_go) ::prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
    SyncMessage m;
    wait_for(ctx.sync_fd, SyncType::go, &m);
    ::prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
    for (auto& j : ctx.joins) {
      if (j.nstype != CLONE_NEWUSER) continue;
      check(::setns(j.fd, CLONE_NEWUSER), "join user namespace");
    }
    if (ctx.unshare_flags) check(::unshare(ctx.unshare_flags), "create namespaces");
    for (auto& j : ctx.joins) {
      if (j.nstype == CLONE_NEWUSER) continue;
      if (::setns(j.fd, j.nstype) != 0) throw_errno("join " + j.type + " namespace");
      ::close(j.fd);
    }
    if (ctx.in_user_ns) {
      check(::setresgid(0, 0, 0), "setgid 0 in user namespace");
      check(::setresuid(0, 0, 0), "setuid 0 in user namespace");
    }
    if (ctx.new_cgroup_ns) check(::unshare(CLONE_NEWCGROUP), "create cgroup namespace");
    if (!spec.hostname.empty())
      check(::sethostname(spec.hostname.data(), spec.hostname.size()), "sethostname");
    if (!spec.domainname.empty())
      check(::setdomainname(spec.domainname.data(), spec.domainname.size()), "setdomainname");

    RootfsPlan plan;
    plan.spec = &spec;
    plan.rootfs = ctx.rootfs;
    plan.rootfs_host = ctx.rootfs_host;
    plan.sources = ctx.sources;
    plan.no_pivot = ctx.no_pivot;
    plan.in_user_ns = ctx.in_user_ns;
    plan.new_cgroup_ns = ctx.new_cgroup_ns;
    plan.have_console = proc.terminal;
    if (ctx.has_mount_ns) prepare_rootfs(plan);

    sync_send(ctx.sync_fd, SyncType::run_hooks);
    wait_for(ctx.sync_fd, SyncType::hooks_done, &m);
    std::string state_json = sync_text(m);
    run_hooks(spec.hooks.create_container, "createContainer", state_json);

    if (ctx.has_mount_ns) {
      finalize_rootfs(plan);
    } else {
      // Without a mount namespace every mount would land on the host and outlive the
      // container: the rootfs is only chroot'ed into and the mounts are skipped.
      if (!spec.mounts.empty()) log::warn("no mount namespace: skipping the mounts of config.json");
      check(::chroot(ctx.rootfs.c_str()), "chroot " + ctx.rootfs);
    }
    apply_sysctl(spec);  // before /proc/sys turns read-only
    if (ctx.has_mount_ns) protect_paths(plan);
    if (proc.terminal) setup_terminal(ctx);
    if (::chdir(proc.cwd.c_str()) != 0)
      throw_errno("chdir to cwd (\"" + proc.cwd + "\") set in config.json failed");
    verify_cwd();
    find_executable(proc);
    apply_rlimits(proc);
    apply_personality(spec);
    if (!ctx.no_new_keyring) {
      std::string name = "_ses." + ctx.id;
      // a fresh session keyring so the container cannot see the host's keys
      ::syscall(SYS_keyctl, 1 /* KEYCTL_JOIN_SESSION_KEYRING */, name.c_str());
    }
    if (!proc.apparmor_profile.empty() && !path_exists("/sys/kernel/security/apparmor"))
      throw Error("apparmor profile \"" + proc.apparmor_profile +
                      "\" requested but AppArmor is not enabled on this host",
                  EINVAL);

    // user, capabilities, no_new_privs, fd hygiene: done before reporting ready so that
    // `create` fails (not the detached init) when any of it cannot be granted
    int stub_fd = make_exec_stub_fd();  // before seccomp, which may forbid memfd_create
    if (stub_fd < 0) throw_errno("create exec stub", -stub_fd);
    oci::Process payload = with_home(proc);
    ProcessSetup setup{&payload, ctx.seccomp, ctx.preserve_fds, {}, state_json};
    finish_process_setup(setup);

    sync_send(ctx.sync_fd, SyncType::ready);
    ready_sent = true;
    ::close(ctx.sync_fd);
    int fifo = ::openat(ctx.state_dir_fd, "exec.fifo", O_WRONLY | O_CLOEXEC);
    if (fifo < 0) throw_errno("open exec.fifo");
    char zero = '0';
    if (!write_all(fifo, &zero, 1)) throw_errno("write exec.fifo");
    // fifo stays open (close-on-exec): `start` sees end-of-file once execve succeeded, so
    // poststart hooks run after the payload was executed, as the spec asks
    ::close(ctx.state_dir_fd);
    run_hooks(spec.hooks.start_container, "startContainer", state_json);

    install_late_seccomp(setup);
    exec_process(payload, stub_fd);
  } catch (const std::exception& e) {
    if (!ready_sent) {
      send_error(ctx.sync_fd, e);
    } else {
      std::string msg = std::string("racker-oci: ") + e.what() + "\n";
      write_all(2, msg.data(), msg.size());
    }
    _exit(ready_sent ? 127 : 1);
  }
}

}  // namespace racker::runtime
