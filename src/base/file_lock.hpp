#pragma once

#include <string>

#include "base/fd.hpp"

namespace racker {

// An exclusive flock on a lock file (created 0600 if missing), held for the object's life.
class FileLock {
 public:
  explicit FileLock(const std::string& path);

 private:
  UniqueFd fd_;
};

}  // namespace racker
