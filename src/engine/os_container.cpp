#include "engine/os_container.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstdio>

#include <nlohmann/json.hpp>

#include "base/error.hpp"
#include "base/fd.hpp"
#include "base/fs.hpp"
#include "base/log.hpp"
#include "base/strings.hpp"
#include "engine/boot.hpp"
#include "engine/provision.hpp"
#include "engine/run.hpp"
#include "runtime/container.hpp"
#include "runtime/mounts.hpp"

namespace racker::engine {
namespace {

// the inits of this process' booted containers, for the signal handler
constexpr int kMaxLive = 64;
std::atomic<pid_t> g_live[kMaxLive];
std::atomic<int> g_signal{0};

void on_signal(int sig) {
  g_signal.store(sig);
  for (auto& p : g_live) {
    pid_t v = p.load();
    if (v > 0) ::kill(v, SIGKILL);
  }
}

void track(pid_t pid, bool add) {
  for (auto& p : g_live) {
    pid_t expected = add ? 0 : pid;
    if (p.compare_exchange_strong(expected, add ? pid : 0)) return;
  }
}

void throw_if_interrupted(const std::string& what) {
  if (int sig = g_signal.load())
    throw Error::interrupted(what + ": interrupted by signal " + std::to_string(sig), sig);
}

bool under(const std::string& path, const char* dir) {
  std::string d = dir;
  return path == d || path.starts_with(d + "/");
}

}  // namespace

struct OsContainer::Impl {
  OsContainerOptions o;
  PreparedContainer p;
  std::unique_ptr<runtime::Runtime> rt;
  boot::Booted booted;
  boot::BootOptions bo;
  UniqueFd notify;  // the boot's notify socket
  bool kept = false;
  bool down = false;
  std::atomic<int> exec_seq{0};
};

OsContainer::OsContainer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

OsContainer::~OsContainer() {
  if (impl_ && !impl_->kept) tear_down();
}

void OsContainer::tear_down_on_signals() {
  struct sigaction sa = {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  for (int sig : {SIGINT, SIGTERM, SIGHUP}) ::sigaction(sig, &sa, nullptr);
}

int OsContainer::interrupted() {
  // during a boot, boot's own handler notes the signal (and ends the wait) instead of ours
  if (int sig = g_signal.load()) return sig;
  return boot::interrupting_signal();
}

std::unique_ptr<OsContainer> OsContainer::boot(const OsContainerOptions& o) {
  throw_if_interrupted("boot " + o.image);
  auto impl = std::make_unique<Impl>();
  impl->o = o;
  RunRequest req;
  req.image = o.image;
  req.name = o.name;
  req.store_root = o.store_root;
  req.state_root = o.state_root;
  req.flags.network = o.network;
  req.remove = o.fast_teardown;  // a throwaway container: a volatile overlay (never synced)
  req.flags.volumes = o.volumes;
  req.flags.hostname = o.hostname.empty() ? o.name : o.hostname;
  // the booted system has no command of its own: PID 1 is the init
  req.flags.entrypoint = std::vector<std::string>{};
  req.flags.args = {"/sbin/init"};
  image::ImageRecord rec = find_or_pull(req);
  {
    image::ImageStore images(o.store_root);
    if (!image_has_systemd(images, rec)) {
      ProvisionOptions po;
      po.store_root = o.store_root;
      po.state_root = o.state_root;
      po.on_status = [](const std::string& s) { std::fprintf(stderr, "%s\n", s.c_str()); };
      rec = ensure_systemd(rec, po);
    }
  }
  impl->p = prepare_container(with_boot_defaults(req, true), rec);
  PreparedContainer& p = impl->p;  // rolls back when impl goes, unless kept
  {
    std::string init = boot::find_init(p.rootfs);
    p.record.command = {init};
    p.record.booted = true;
    impl->notify = boot::prepare_spec(p.built.config, p.cdir, init, effective_seccomp(req.flags));
    write_container_files(p);
    impl->rt = std::make_unique<runtime::Runtime>(o.state_root);
    runtime::CreateOptions copts = create_options(p.cdir);
    impl->bo.ready_timeout_ms = o.ready_timeout_ms;
    impl->bo.fast_teardown = o.fast_teardown;
    impl->booted =
        boot::start_and_wait(*impl->rt, p.id, copts, p.cdir, impl->notify.get(), impl->bo);
    track(impl->booted.pid, true);
    if (g_signal.load()) {
      pid_t pid = impl->booted.pid;
      boot::stop(*impl->rt, p.id, impl->booted, impl->bo);
      track(pid, false);
      throw_if_interrupted("boot " + o.image);
    }
  }
  return std::unique_ptr<OsContainer>(new OsContainer(std::move(impl)));
}

ExecResult OsContainer::exec(const std::vector<std::string>& args, int timeout_ms) {
  Impl& m = *impl_;
  if (m.down) throw Error("exec in " + m.p.name + ": the container was torn down", ESRCH);
  throw_if_interrupted("exec in " + m.p.name);
  int n = m.exec_seq++;
  std::string base = m.p.cdir + "/exec-" + std::to_string(n);
  nlohmann::json proc = m.p.built.config["process"];
  proc["args"] = args;
  proc["terminal"] = false;
  proc["cwd"] = "/";
  proc["user"] = {{"uid", 0}, {"gid", 0}};
  write_file_atomic(base + ".json", proc.dump());
  runtime::ExecOptions eo;
  eo.process_file = base + ".json";
  eo.detach = true;
  eo.pid_file = base + ".pid";
  ExecResult r;
  ::unlink((base + ".out").c_str());
  try {
    boot::with_stdio_to(base + ".out", [&] { return m.rt->exec(m.p.id, eo); });
  } catch (const Error& e) {
    // the command did not start
    r.status = e.kind() == ErrorKind::command_not_found ? 127 : 126;
    r.output = e.what();
    return r;
  }
  auto pid = parse_int(trim(read_file(base + ".pid")));
  if (!pid) throw Error("exec in " + m.p.name + ": no pid", EIO);
  pid_t child = static_cast<pid_t>(*pid);
  UniqueFd pidfd(static_cast<int>(::syscall(SYS_pidfd_open, child, 0)));
  if (pidfd && timeout_ms > 0) {
    struct pollfd pf = {pidfd.get(), POLLIN, 0};
    int rc;
    while ((rc = ::poll(&pf, 1, timeout_ms)) < 0 && errno == EINTR) {
    }
    if (rc == 0) {
      r.timed_out = true;
      ::kill(child, SIGKILL);
    }
  }
  pidfd.reset();
  int st = 0;
  while (::waitpid(child, &st, 0) < 0 && errno == EINTR) {
  }
  r.status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  r.output = read_file_if_exists(base + ".out").value_or("");
  for (auto* ext : {".json", ".pid", ".out"}) ::unlink((base + ext).c_str());
  return r;
}

void OsContainer::copy_in(const std::string& host_path, const std::string& container_path) {
  Impl& m = *impl_;
  struct stat st;
  if (::stat(host_path.c_str(), &st) != 0) throw_errno("stat " + host_path);
  if (!S_ISREG(st.st_mode)) throw Error(host_path + ": not a regular file", EINVAL);
  std::string target = clean_path(container_path);
  // /tmp and /run are tmpfs mounts inside: stage the file in the root filesystem, move it there
  bool staged = under(target, "/tmp") || under(target, "/run");
  std::string path = staged ? "/var/tmp/.racker-copy-" + std::to_string(m.exec_seq++) : target;
  std::string dst = runtime::secure_join(m.p.rootfs, path);
  auto slash = dst.rfind('/');
  if (slash != std::string::npos && slash > 0) mkdir_p(dst.substr(0, slash), 0755);
  copy_file(host_path, dst, {.mode = st.st_mode & 07777});
  if (staged) {
    auto r = exec({"/bin/sh", "-c", "mkdir -p \"$(dirname \"$2\")\" && mv -f \"$1\" \"$2\"", "sh",
                   path, target});
    if (r.status != 0)
      throw Error("copy " + host_path + " to " + target + ": " + trim(r.output), EIO);
  }
}

const std::string& OsContainer::id() const {
  return impl_->p.id;
}
const std::string& OsContainer::name() const {
  return impl_->p.name;
}
pid_t OsContainer::init_pid() const {
  return impl_->booted.pid;
}
std::string OsContainer::netns_path() const {
  return "/proc/" + std::to_string(impl_->booted.pid) + "/ns/net";
}
long OsContainer::ready_ms() const {
  return impl_->booted.ready_ms;
}

void OsContainer::keep() {
  impl_->kept = true;
  impl_->p.commit();
  track(impl_->booted.pid, false);
  impl_->booted.pidfd.reset();
}

void OsContainer::tear_down() {
  Impl& m = *impl_;
  if (m.down) return;
  m.down = true;
  pid_t pid = m.booted.pid;
  try {
    if (m.rt) boot::stop(*m.rt, m.p.id, m.booted, m.bo);
    track(pid, false);
  } catch (const std::exception& e) {
    log::warn("tear down " + m.p.name + ": " + e.what());
  }
  m.p.discard();
}

}  // namespace racker::engine
