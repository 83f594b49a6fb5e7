#include "base/file_lock.hpp"

#include <fcntl.h>
#include <sys/file.h>

#include <cerrno>

#include "base/error.hpp"

namespace racker {

FileLock::FileLock(const std::string& path) {
  fd_.reset(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  if (!fd_) throw_errno("open lock " + path);
  while (::flock(fd_.get(), LOCK_EX) != 0)
    if (errno != EINTR) throw_errno("lock " + path);
}

}  // namespace racker
