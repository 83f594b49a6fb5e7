// base/: errors, file descriptors, file helpers and logging shared by every module.
// Nothing here knows about containers or images.
#pragma once

#include <stdexcept>
#include <string>

namespace racker {

// One error type for the whole project: a message (lower-case, naming the path, field or
// reference at fault), an optional errno, and context prefixed on the way up.
class Error : public std::runtime_error {
 public:
  explicit Error(std::string message, int err = 0);
  int err() const { return err_; }
  // Returns a copy with "context: " prefixed to the message.
  Error with_context(const std::string& context) const;

 private:
  int err_;
};

// Throws Error("what: strerror(errno)", errno) using the current errno.
[[noreturn]] void throw_errno(const std::string& what);
[[noreturn]] void throw_errno(const std::string& what, int err);

}  // namespace racker
