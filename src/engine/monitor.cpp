#include "engine/monitor.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <thread>

#include "base/error.hpp"
#include "base/fs.hpp"
#include "base/log.hpp"
#include "engine/containers.hpp"
#include "engine/network.hpp"
#include "runtime/container.hpp"

namespace racker::engine {

RunMonitor RunMonitor::start(const std::string& store_root, const std::string& state_root,
                             const std::string& id, bool remove) {
  int p[2];
  if (::pipe2(p, O_CLOEXEC) != 0) throw_errno("pipe for the container monitor");
  UniqueFd ours(p[1]), theirs(p[0]);
  // Everything the child needs, made before fork (only exec-safe calls after it)
  std::vector<std::string> argv_s = {"racker",
                                     "--root",
                                     store_root,
                                     "container",
                                     "monitor",
                                     "--state-root",
                                     state_root,
                                     "--parent",
                                     std::to_string(::getpid()),
                                     remove ? "--rm" : "--keep",
                                     id};
  std::vector<char*> argv;
  for (auto& s : argv_s) argv.push_back(s.data());
  argv.push_back(nullptr);
  pid_t child = ::fork();
  if (child < 0) throw_errno("fork the container monitor");
  if (child == 0) {
    // a grandchild, so that it is nobody's child of ours to reap, in a session of its own
    // (Ctrl-C at racker's terminal is for racker: the monitor acts only when racker is gone)
    if (::fork() != 0) _exit(0);
    ::setsid();
    int null = ::open("/dev/null", O_RDWR | O_CLOEXEC);
    for (int fd = 0; fd < 3; ++fd) ::dup2(null, fd);
    // the monitor's end as fd 3, without O_CLOEXEC (dup2 onto itself would keep the flag)
    if (theirs.get() == 3)
      ::fcntl(3, F_SETFD, 0);
    else
      ::dup2(theirs.get(), 3);
    ::execv("/proc/self/exe", argv.data());
    _exit(127);
  }
  while (::waitpid(child, nullptr, 0) < 0 && errno == EINTR) {
  }
  RunMonitor m;
  m.pipe_ = std::move(ours);
  return m;
}

RunMonitor::~RunMonitor() {
  if (!pipe_) return;
  (void)!::write(pipe_.get(), "done", 4);
}

void clean_up_after(const std::string& store_root, const std::string& state_root,
                    const std::string& id, bool remove) {
  Containers store(store_root, state_root);
  ContainerEntry c = store.load(id);
  bool made = path_exists(c.dir + "/meta.json");
  if (remove || !made) {
    store.remove(c, true);
    return;
  }
  // It stays, exited: what only a running container needs goes
  if (c.has_state) {
    try {
      runtime::Runtime(state_root).remove(id, true);
    } catch (const Error& e) {
      log::warn("container " + c.name + ": " + e.what());
    }
  }
  net::teardown(state_root, id);
  std::string rootfs = c.dir + "/rootfs";
  for (int i = 0; i < 8 && is_mount_point(real_path(rootfs)); ++i)
    if (::umount2(rootfs.c_str(), MNT_DETACH) != 0) break;
  try {
    auto meta = nlohmann::json::parse(read_file(c.dir + "/meta.json"));
    meta.erase("started");
    write_file_atomic(c.dir + "/meta.json", meta.dump(2));
  } catch (const std::exception&) {
  }
}

int monitor_main(int fd, pid_t parent, const std::string& store_root, const std::string& state_root,
                 const std::string& id, bool remove) {
  ::prctl(PR_SET_NAME, "racker-monitor");
  // racker's end of the pipe may live on in a container init that racker forked and that
  // never got to exec (it waits to be started): racker's own exit is what counts
  UniqueFd racker(static_cast<int>(::syscall(SYS_pidfd_open, parent, 0)));
  for (;;) {
    struct pollfd p[2] = {{fd, POLLIN, 0}, {racker.get(), POLLIN, 0}};
    if (::poll(p, racker ? 2 : 1, -1) < 0) {
      if (errno == EINTR) continue;
      return 1;
    }
    if (p[0].revents & (POLLIN | POLLHUP | POLLERR)) {
      char buf[8];
      ssize_t n = ::read(fd, buf, sizeof buf);
      if (n > 0) return 0;  // racker finished the run itself
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return 1;  // no pipe (not started by racker run): nothing is known
      break;                // end of file: racker is gone
    }
    if (p[1].revents & POLLIN) {
      // racker is gone; a "done" it wrote just before still counts
      struct pollfd q = {fd, POLLIN, 0};
      char buf[8];
      if (::poll(&q, 1, 0) > 0 && ::read(fd, buf, sizeof buf) > 0) return 0;
      break;
    }
  }
  ::close(fd);
  // racker is gone. A booted system goes at once (its command went with racker), so does an
  // init still waiting to be started (nobody will); a plain payload may run on, as under
  // docker when the client goes: wait for it.
  Containers store(store_root, state_root);
  ContainerEntry c = store.load(id);
  if (c.running() && (c.meta.value("booted", false) || c.status == "created")) {
    try {
      runtime::Runtime(state_root).kill(id, SIGKILL, true);
    } catch (const Error&) {
    }
  }
  while (store.refresh(c).running()) {
    pid_t pid = store.refresh(c).pid;
    int pfd = pid > 0 ? static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)) : -1;
    if (pfd >= 0) {
      struct pollfd p = {pfd, POLLIN, 0};
      ::poll(&p, 1, 60'000);
      ::close(pfd);
    } else {
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
  }
  clean_up_after(store_root, state_root, id, remove);
  return 0;
}

}  // namespace racker::engine
