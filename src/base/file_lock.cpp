#include "base/file_lock.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>

#include <cerrno>

#include "base/error.hpp"

namespace racker {

FileLock::FileLock(const std::string& path, File file) : path_(path), file_(file) {
  for (;;) {
    fd_.reset(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
    if (!fd_) throw_errno("open lock " + path);
    while (::flock(fd_.get(), LOCK_EX) != 0)
      if (errno != EINTR) throw_errno("lock " + path);
    if (file_ == File::kept) return;
    // the holder before us may have removed the file: then ours is a lock nobody else sees
    struct stat by_fd, by_path;
    if (::fstat(fd_.get(), &by_fd) != 0) throw_errno("stat lock " + path);
    if (::stat(path.c_str(), &by_path) == 0 && by_fd.st_ino == by_path.st_ino &&
        by_fd.st_dev == by_path.st_dev)
      return;
  }
}

FileLock::~FileLock() {
  if (fd_ && file_ == File::transient) ::unlink(path_.c_str());  // still held: nobody races us
}

}  // namespace racker
