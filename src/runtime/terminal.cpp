#include "runtime/terminal.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <termios.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "base/error.hpp"

namespace racker::runtime {

bool send_fd(int sock, int fd, const std::string& payload) {
  struct msghdr msg {};
  char dummy = 0;
  struct iovec iov;
  iov.iov_base = payload.empty() ? &dummy : const_cast<char*>(payload.data());
  iov.iov_len = payload.empty() ? 1 : payload.size();
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(struct cmsghdr) char ctrl[CMSG_SPACE(sizeof(int))] = {};
  msg.msg_control = ctrl;
  msg.msg_controllen = sizeof ctrl;
  struct cmsghdr* c = CMSG_FIRSTHDR(&msg);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int));
  std::memcpy(CMSG_DATA(c), &fd, sizeof(int));
  for (;;) {
    if (::sendmsg(sock, &msg, MSG_NOSIGNAL) >= 0) return true;
    if (errno != EINTR) return false;
  }
}

int recv_fd(int sock, std::string* payload) {
  struct msghdr msg {};
  char buf[4096];
  struct iovec iov = {buf, sizeof buf};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(struct cmsghdr) char ctrl[CMSG_SPACE(sizeof(int))] = {};
  msg.msg_control = ctrl;
  msg.msg_controllen = sizeof ctrl;
  ssize_t n;
  do {
    n = ::recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
  } while (n < 0 && errno == EINTR);
  if (n < 0) return -1;
  if (payload) payload->assign(buf, static_cast<size_t>(n));
  struct cmsghdr* c = CMSG_FIRSTHDR(&msg);
  if (!c || c->cmsg_type != SCM_RIGHTS) {
    errno = EBADMSG;
    return -1;
  }
  int fd;
  std::memcpy(&fd, CMSG_DATA(c), sizeof(int));
  return fd;
}

UniqueFd connect_unix(const std::string& path) {
  UniqueFd s(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!s) throw_errno("socket");
  struct sockaddr_un addr {};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof addr.sun_path)
    throw Error("socket path too long: " + path, ENAMETOOLONG);
  std::memcpy(addr.sun_path, path.c_str(), path.size());
  if (::connect(s.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0)
    throw_errno("connect to console socket " + path);
  return s;
}

int open_pty(int* master, std::string* slave_path) {
  int m = ::open("/dev/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC);
  if (m < 0) return -errno;
  int unlock = 0;
  if (::ioctl(m, TIOCSPTLCK, &unlock) != 0) {
    int e = errno;
    ::close(m);
    return -e;
  }
  unsigned n = 0;
  if (::ioctl(m, TIOCGPTN, &n) != 0) {
    int e = errno;
    ::close(m);
    return -e;
  }
  *master = m;
  *slave_path = "/dev/pts/" + std::to_string(n);
  return 0;
}

bool copy_window_size(int master) {
  struct winsize ws;
  for (int fd : {0, 1, 2})  // stdin may be /dev/null (-t without -i): ask the others too
    if (::ioctl(fd, TIOCGWINSZ, &ws) == 0) return ::ioctl(master, TIOCSWINSZ, &ws) == 0;
  return false;
}

void relay_pty(int master, int stop_fd, pid_t forward_to) {
  struct termios saved;
  bool raw = ::isatty(0) && ::tcgetattr(0, &saved) == 0;
  if (raw) {
    struct termios t = saved;
    ::cfmakeraw(&t);
    ::tcsetattr(0, TCSANOW, &t);
  }
  auto sync_size = [&] { copy_window_size(master); };
  sync_size();
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGWINCH);
  if (forward_to > 0)
    for (int s : {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGCONT}) sigaddset(&set, s);
  sigset_t old;
  ::sigprocmask(SIG_BLOCK, &set, &old);
  int sfd = ::signalfd(-1, &set, SFD_CLOEXEC);
  bool in_open = true;
  char buf[16384];
  for (;;) {
    struct pollfd p[4] = {
        {master, POLLIN, 0}, {in_open ? 0 : -1, POLLIN, 0}, {sfd, POLLIN, 0}, {stop_fd, POLLIN, 0}};
    if (::poll(p, 4, -1) < 0) {
      if (errno == EINTR) continue;
      break;
    }
    if (p[0].revents & POLLIN) {
      ssize_t n = ::read(master, buf, sizeof buf);
      if (n <= 0) break;
      if (!write_all(1, buf, static_cast<size_t>(n))) break;
    } else if (p[0].revents & (POLLHUP | POLLERR)) {
      break;
    }
    if (p[1].revents & (POLLIN | POLLHUP)) {
      ssize_t n = ::read(0, buf, sizeof buf);
      if (n <= 0) {
        in_open = false;
        char eot = 4;  // pass end-of-input on as ^D
        (void)!::write(master, &eot, 1);
      } else {
        write_all(master, buf, static_cast<size_t>(n));
      }
    }
    if (p[2].revents & POLLIN) {
      struct signalfd_siginfo si;
      if (::read(sfd, &si, sizeof si) == sizeof si) {
        if (si.ssi_signo == SIGWINCH)
          sync_size();
        else if (forward_to > 0)
          ::kill(forward_to, static_cast<int>(si.ssi_signo));
      }
    }
    if (stop_fd >= 0 && (p[3].revents & (POLLIN | POLLHUP))) {
      // drain what is left, then stop
      for (;;) {
        struct pollfd q = {master, POLLIN, 0};
        if (::poll(&q, 1, 0) <= 0 || !(q.revents & POLLIN)) break;
        ssize_t n = ::read(master, buf, sizeof buf);
        if (n <= 0) break;
        write_all(1, buf, static_cast<size_t>(n));
      }
      break;
    }
  }
  if (sfd >= 0) ::close(sfd);
  ::sigprocmask(SIG_SETMASK, &old, nullptr);
  if (raw) ::tcsetattr(0, TCSANOW, &saved);
}

}  // namespace racker::runtime
