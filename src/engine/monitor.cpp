#include "engine/monitor.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <new>
#include <thread>
#include <utility>

#include "base/error.hpp"
#include "base/fs.hpp"
#include "base/log.hpp"
#include "engine/containers.hpp"
#include "engine/network.hpp"
#include "runtime/container.hpp"

namespace racker::engine {

namespace {

// monitors this process started, reaped once they have ended (a process that runs many
// containers collects no zombies), with the memory block a watcher ran on (below), which is
// unmapped only then
struct Spawned {
  pid_t pid;
  void* block = nullptr;
  size_t size = 0;
};

std::vector<Spawned>& spawned_monitors() {
  static std::vector<Spawned> list;
  return list;
}

void reap_earlier_monitors() {
  std::erase_if(spawned_monitors(), [](const Spawned& s) {
    pid_t r = ::waitpid(s.pid, nullptr, WNOHANG);
    if (r != s.pid && !(r < 0 && errno == ECHILD)) return false;
    if (s.block) ::munmap(s.block, s.size);
    return true;
  });
}

#if defined(__x86_64__) || defined(__aarch64__)
#define RACKER_LIGHT_WATCHER 1

// The watcher: a process that shares racker's memory (clone with CLONE_VM: no copy of the page
// tables, no exec, no dynamic loading on the run's path) and waits on the pipe and on racker.
// Only when the monitor has work ("hand", or racker gone) does it exec the monitor proper.
// It runs on a stack and data of its own that racker never frees, and makes raw system calls
// only: libc's wrappers would write racker's errno, its signal handlers would run racker's code.
#if defined(__x86_64__)
[[gnu::always_inline]] inline long raw6(long n, long a = 0, long b = 0, long c = 0, long d = 0) {
  long ret;
  register long r10 __asm__("r10") = d;
  __asm__ volatile("syscall"
                   : "=a"(ret)
                   : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10)
                   : "rcx", "r11", "memory");
  return ret;
}
#else
[[gnu::always_inline]] inline long raw6(long n, long a = 0, long b = 0, long c = 0, long d = 0) {
  register long x8 __asm__("x8") = n;
  register long x0 __asm__("x0") = a;
  register long x1 __asm__("x1") = b;
  register long x2 __asm__("x2") = c;
  register long x3 __asm__("x3") = d;
  __asm__ volatile("svc 0" : "+r"(x0) : "r"(x8), "r"(x1), "r"(x2), "r"(x3) : "memory");
  return x0;
}
#endif

struct WatchBlock {
  int pipe_fd = -1;
  pid_t parent = 0;
  char* const* argv_hand = nullptr;  // the monitor's argv: taken over (-d --rm)
  char* const* argv_gone = nullptr;  // ...: racker is gone
  char* const* envp = nullptr;
  char null_path[16] = "/dev/null";
  char exe_path[16] = "/proc/self/exe";
  char name[16] = "racker-monitor";
};

[[gnu::no_stack_protector, gnu::no_sanitize("address", "undefined", "thread")]] int watcher(
    void* arg) {
  auto* w = static_cast<WatchBlock*>(arg);
  unsigned long all = ~0UL;
  raw6(SYS_rt_sigprocmask, SIG_SETMASK, reinterpret_cast<long>(&all), 0, sizeof all);
  raw6(SYS_setsid);  // Ctrl-C at racker's terminal is for racker
  raw6(SYS_prctl, PR_SET_NAME, reinterpret_cast<long>(w->name));
  long null = raw6(SYS_openat, AT_FDCWD, reinterpret_cast<long>(w->null_path), O_RDWR);
  for (int fd = 0; fd < 3; ++fd)
    if (null >= 0 && null != fd) raw6(SYS_dup3, null, fd, 0);
  // racker's other descriptors (its image lease's lock, a socket) are not the watcher's
  raw6(SYS_close_range, 3, w->pipe_fd - 1, 0);
  raw6(SYS_close_range, w->pipe_fd + 1, ~0U, 0);
  long racker = raw6(SYS_pidfd_open, w->parent, 0);
  struct pollfd p[2] = {{w->pipe_fd, POLLIN, 0}, {static_cast<int>(racker), POLLIN, 0}};
  raw6(SYS_fcntl, w->pipe_fd, F_SETFL, O_NONBLOCK);
  char* const* then = w->argv_gone;
  for (;;) {
    p[0].revents = p[1].revents = 0;
    long r = raw6(SYS_poll, reinterpret_cast<long>(p), racker >= 0 ? 2 : 1, -1);
    if (r < 0 && r != -EINTR) break;
    // a "done" racker wrote, even just before it went, means it finished the run itself
    char buf[4];
    long n = raw6(SYS_read, w->pipe_fd, reinterpret_cast<long>(buf), 4);
    if (n == 4 && buf[0] == 'h' && buf[1] == 'a' && buf[2] == 'n' && buf[3] == 'd') {
      then = w->argv_hand;
      break;
    }
    if (n > 0) raw6(SYS_exit, 0);
    if (n == -EINTR || (n == -EAGAIN && !(p[1].revents & POLLIN))) continue;
    break;  // end of file, racker's pidfd, or no pipe: racker is gone
  }
  raw6(SYS_execve, reinterpret_cast<long>(w->exe_path), reinterpret_cast<long>(then),
       reinterpret_cast<long>(w->envp));
  raw6(SYS_exit, 127);
  return 127;
}

// Copies strings and pointer arrays into one block that racker never frees (the watcher reads
// them after racker has gone).
class Arena {
 public:
  explicit Arena(size_t size) : size_(size) {
    void* m = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) throw_errno("mmap for the container monitor");
    base_ = static_cast<char*>(m);
  }
  ~Arena() {
    if (base_) ::munmap(base_, size_);
  }
  Arena(const Arena&) = delete;
  Arena& operator=(const Arena&) = delete;
  void* take(size_t n) {
    n = (n + 15) & ~size_t{15};
    if (used_ + n > size_) throw Error("container monitor: its arguments are too long", E2BIG);
    void* p = base_ + used_;
    used_ += n;
    return p;
  }
  char* const* argv(const std::vector<std::string>& v) {
    auto** out = static_cast<char**>(take((v.size() + 1) * sizeof(char*)));
    for (size_t i = 0; i < v.size(); ++i) {
      out[i] = static_cast<char*>(take(v[i].size() + 1));
      std::memcpy(out[i], v[i].c_str(), v[i].size() + 1);
    }
    out[v.size()] = nullptr;
    return out;
  }
  char* top() const { return base_ + size_; }
  size_t size() const { return size_; }
  // the block is the caller's from here on (to unmap once the watcher has ended)
  void* release() { return std::exchange(base_, nullptr); }

 private:
  char* base_ = nullptr;
  size_t size_ = 0, used_ = 0;
};

Spawned start_watcher(int pipe_fd, const std::vector<std::string>& argv) {
  std::vector<std::string> env;
  for (char** e = environ; e && *e; ++e) env.emplace_back(*e);
  size_t bytes = 64 * 1024;
  for (auto& s : argv) bytes += 2 * (s.size() + 32);
  for (auto& s : env) bytes += s.size() + 32;
  bytes = (bytes + 4095) & ~size_t{4095};
  Arena arena(bytes);
  auto* w = new (arena.take(sizeof(WatchBlock))) WatchBlock;
  w->pipe_fd = pipe_fd;
  w->parent = ::getpid();
  std::vector<std::string> hand = argv, gone = argv;
  hand.insert(hand.end() - 1, {"--then", "hand"});
  gone.insert(gone.end() - 1, {"--then", "gone"});
  w->argv_hand = arena.argv(hand);
  w->argv_gone = arena.argv(gone);
  w->envp = arena.argv(env);
  // its stack: the top of the block (32 KiB are left for it, the rest holds the data)
  char* stack = arena.top();
  arena.take(32 * 1024);
  pid_t pid = ::clone(watcher, stack, CLONE_VM | SIGCHLD, w);
  if (pid < 0) throw_errno("start the container monitor");
  size_t size = arena.size();
  return {pid, arena.release(), size};
}
#endif

#ifndef RACKER_LIGHT_WATCHER
// posix_spawn of the monitor proper (where the watcher is not built): vfork and exec, in a
// session of its own
pid_t spawn_monitor(int pipe_fd, const std::vector<std::string>& argv_s) {
  std::vector<char*> argv;
  for (auto& s : argv_s) argv.push_back(const_cast<char*>(s.c_str()));
  argv.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawnattr_t attr;
  posix_spawn_file_actions_init(&fa);
  posix_spawnattr_init(&attr);
  // the monitor's end as fd 3 first (dup2 onto itself clears O_CLOEXEC in posix_spawn), then
  // /dev/null as 0, 1 and 2
  posix_spawn_file_actions_adddup2(&fa, pipe_fd, 3);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDWR, 0);
  posix_spawn_file_actions_adddup2(&fa, 0, 1);
  posix_spawn_file_actions_adddup2(&fa, 0, 2);
  posix_spawnattr_setflags(&attr,
                           POSIX_SPAWN_SETSID | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  sigset_t none, all;
  sigemptyset(&none);
  sigfillset(&all);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setsigdefault(&attr, &all);
  pid_t child = -1;
  int rc = ::posix_spawn(&child, "/proc/self/exe", &fa, &attr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&attr);
  if (rc != 0) {
    errno = rc;
    throw_errno("start the container monitor");
  }
  return child;
}
#endif

}  // namespace

RunMonitor RunMonitor::start(const std::string& store_root, const std::string& state_root,
                             const std::string& id, bool remove) {
  int p[2];
  if (::pipe2(p, O_CLOEXEC) != 0) throw_errno("pipe for the container monitor");
  UniqueFd ours(p[1]), theirs(p[0]);
  if (theirs.get() < 3) {  // the watcher keeps 0-2 for /dev/null
    theirs.reset(::fcntl(theirs.get(), F_DUPFD_CLOEXEC, 3));
    if (!theirs) throw_errno("pipe for the container monitor");
  }
  std::vector<std::string> argv = {"racker",
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
  reap_earlier_monitors();
#ifdef RACKER_LIGHT_WATCHER
  Spawned child = start_watcher(theirs.get(), argv);
#else
  Spawned child{spawn_monitor(theirs.get(), argv)};
#endif
  // our child until we go (then init's); one that ends before us is reaped by the next start
  spawned_monitors().push_back(child);
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
                 const std::string& id, bool remove, std::string_view then) {
  ::prctl(PR_SET_NAME, "racker-monitor");
  bool handed_over = then == "hand";
  if (then.empty()) {
    // racker's end of the pipe may live on in a container init that racker forked and that
    // never got to exec (it waits to be started): racker's own exit is what counts
    UniqueFd racker(static_cast<int>(::syscall(SYS_pidfd_open, parent, 0)));
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
