#pragma once

#include <string>

#include "base/fd.hpp"

namespace racker {

// An exclusive flock on a lock file (created 0600 if missing), held for the object's life.
class FileLock {
 public:
  // kept: the lock file stays (a store-wide lock at a fixed path). transient: the lock file is
  // removed when the lock is released; every user of the path must take it transient too (a
  // waiter that gets the lock of a file already removed opens the path again).
  enum class File { kept, transient };
  explicit FileLock(const std::string& path, File file = File::kept);
  ~FileLock();
  FileLock(const FileLock&) = delete;
  FileLock& operator=(const FileLock&) = delete;

 private:
  std::string path_;
  File file_;
  UniqueFd fd_;
};

}  // namespace racker
