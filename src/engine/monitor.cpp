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

void RunMonitor::hand_over() {
  if (!pipe_) return;
  (void)!::write(pipe_.get(), "hand", 4);
  pipe_.reset();
}

void clean_up_after(const std::string& store_root, const std::string& state_root,
                    const std::string& id, bool remove) {
  ContainerStore store(store_root, state_root);
  ContainerEntry c = store.load(id);
  bool made = path_exists(c.dir + "/meta.json");
  if (remove || !made) {
    store.remove(c, true);
    return;
  }
  store.release_running_parts(c);  // it stays, exited
}

int monitor_main(int fd, pid_t parent, const std::string& store_root, const std::string& state_root,
                 const std::string& id, bool remove) {
  ::prctl(PR_SET_NAME, "racker-monitor");
  // racker's end of the pipe may live on in a container init that racker forked and that
  // never got to exec (it waits to be started): racker's own exit is what counts
  UniqueFd racker(static_cast<int>(::syscall(SYS_pidfd_open, parent, 0)));
  bool handed_over = false;
  {
    UniqueFd pipe(fd);
    (void)::fcntl(pipe.get(), F_SETFL, O_NONBLOCK);
    for (;;) {
      struct pollfd p[2] = {{pipe.get(), POLLIN, 0}, {racker.get(), POLLIN, 0}};
      if (::poll(p, racker ? 2 : 1, -1) < 0) {
        if (errno == EINTR) continue;
        return 1;
      }
      // a "done" racker wrote, even just before it went, means it finished the run itself
      char buf[4];
      ssize_t n = ::read(pipe.get(), buf, sizeof buf);
      if (n >= 4 && std::string_view(buf, 4) == "hand") {
        handed_over = true;  // racker run -d --rm: the container is ours now
        break;
      }
      if (n > 0) return 0;
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && errno != EAGAIN) return 1;        // no pipe (not started by racker run)
      if (n == 0 || (p[1].revents & POLLIN)) break;  // end of file, or racker's pidfd: gone
    }
  }
  // racker is gone. A booted system goes at once (its command went with racker), so does an
  // init still waiting to be started (nobody will); a plain payload may run on, as under
  // docker when the client goes: wait for it.
  ContainerStore store(store_root, state_root);
  ContainerEntry c = store.load(id);
  if (!handed_over && c.running() && (c.rec.booted || c.status == ContainerStatus::created)) {
    try {
      runtime::Runtime(state_root).kill(id, SIGKILL, true);
    } catch (const Error&) {
    }
  }
  while (store.refresh(c).running()) {
    pid_t pid = store.refresh(c).pid;
    UniqueFd pfd(pid > 0 ? static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)) : -1);
    if (pfd) {
      struct pollfd p = {pfd.get(), POLLIN, 0};
      ::poll(&p, 1, 60'000);
    } else {
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
  }
  clean_up_after(store_root, state_root, id, remove);
  return 0;
}

}  // namespace racker::engine
