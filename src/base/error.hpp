// base/: errors, file descriptors, file helpers and logging shared by every module.
// Nothing here knows about containers or images.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>

namespace racker {

// What went wrong, as far as a caller must tell failures apart: the exit status a command
// gives (docker's 125/126/127/128+N) and, for an API, the status code.
enum class ErrorKind : uint8_t {
  failed,             // racker's own failure (a syscall, the store, a registry)
  invalid,            // bad input: a flag, an argument, a file the user gave
  not_found,          // no such container, image or file
  conflict,           // in use: a name taken, a container running, an image used
  cannot_execute,     // the payload exists but cannot be executed (docker's 126)
  command_not_found,  // the payload's executable does not exist (docker's 127)
  interrupted,        // racker itself was stopped by a signal (128+N)
};

// One error type for the whole project: a message (lower-case, naming the path, field or
// reference at fault), an optional errno, a kind, and context prefixed on the way up.
class Error : public std::runtime_error {
 public:
  explicit Error(std::string message, int err = 0, ErrorKind kind = ErrorKind::failed);
  // racker stopped by signal sig while doing what message says
  static Error interrupted(std::string message, int sig);

  int err() const { return err_; }
  ErrorKind kind() const { return kind_; }
  int signal() const { return signal_; }
  // Returns a copy with "context: " prefixed to the message (kind and errno kept).
  Error with_context(const std::string& context) const;

 private:
  int err_;
  ErrorKind kind_;
  int signal_ = 0;
};

// Which exit statuses a command speaks: docker's run/create/start/exec (125 for their own
// failures, 126, 127, 128+N) or every other command's (1).
enum class ExitStyle { payload, plain };

// The one mapping from an error to an exit status.
int exit_status(const Error& e, ExitStyle style);
// The one mapping from an error to an HTTP status code (Docker Engine API conventions).
int http_status(const Error& e);

// Throws Error("what: strerror(errno)", errno) using the current errno.
[[noreturn]] void throw_errno(const std::string& what);
[[noreturn]] void throw_errno(const std::string& what, int err);

}  // namespace racker
