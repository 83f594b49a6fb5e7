#pragma once

#include <unistd.h>

#include <string>
#include <utility>

namespace racker {

// Owns one file descriptor and closes it when it goes away.
class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  UniqueFd(UniqueFd&& o) noexcept : fd_(o.release()) {}
  UniqueFd& operator=(UniqueFd&& o) noexcept {
    if (this != &o) reset(o.release());
    return *this;
  }
  ~UniqueFd() { reset(); }

  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  explicit operator bool() const { return valid(); }
  int release() { return std::exchange(fd_, -1); }
  void reset(int fd = -1) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
  }

 private:
  int fd_ = -1;
};

// Puts fd over target (0, 1 or 2: the stdio a runtime hands a container) until it goes out of
// scope, then puts the old one back (stdio's buffers are flushed first).
class Redirect {
 public:
  Redirect(int target, int fd);
  ~Redirect();
  Redirect(const Redirect&) = delete;
  Redirect& operator=(const Redirect&) = delete;

 private:
  int target_;
  UniqueFd saved_;
};

// Opens path for appending (created 0640), as a log a container's stdio goes to; throws
// Error naming it.
UniqueFd open_log(const std::string& path);
// /dev/null for reading and writing; throws Error.
UniqueFd open_dev_null();

// Writes all of buf; retries on EINTR and short writes. Returns false on error (errno set).
bool write_all(int fd, const void* buf, size_t len);
// Copies everything readable from in to out. False with errno set on a read or write error.
bool copy_all(int in, int out);
// Reads until len bytes or EOF. Returns bytes read, -1 on error.
ssize_t read_full(int fd, void* buf, size_t len);

}  // namespace racker
