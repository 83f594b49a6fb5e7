#include "base/fd.hpp"

#include <fcntl.h>

#include <cerrno>
#include <cstdio>

#include "base/error.hpp"

namespace racker {

Redirect::Redirect(int target, int fd) : target_(target) {
  std::fflush(stdout);
  std::fflush(stderr);
  saved_.reset(::fcntl(target, F_DUPFD_CLOEXEC, 3));
  ::dup2(fd, target);
}

Redirect::~Redirect() {
  std::fflush(stdout);
  std::fflush(stderr);
  if (saved_) ::dup2(saved_.get(), target_);
}

UniqueFd open_log(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640));
  if (!fd) throw_errno("open " + path);
  return fd;
}

UniqueFd open_dev_null() {
  UniqueFd fd(::open("/dev/null", O_RDWR | O_CLOEXEC));
  if (!fd) throw_errno("open /dev/null");
  return fd;
}

bool write_all(int fd, const void* buf, size_t len) {
  auto* p = static_cast<const char*>(buf);
  while (len > 0) {
    ssize_t n = ::write(fd, p, len);
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    p += n;
    len -= static_cast<size_t>(n);
  }
  return true;
}

bool copy_all(int in, int out) {
  char buf[1 << 16];
  for (;;) {
    ssize_t n = ::read(in, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return false;
    if (n == 0) return true;
    if (!write_all(out, buf, static_cast<size_t>(n))) return false;
  }
}

ssize_t read_full(int fd, void* buf, size_t len) {
  auto* p = static_cast<char*>(buf);
  size_t got = 0;
  while (got < len) {
    ssize_t n = ::read(fd, p + got, len - got);
    if (n < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    if (n == 0) break;
    got += static_cast<size_t>(n);
  }
  return static_cast<ssize_t>(got);
}

}  // namespace racker
