#include "base/error.hpp"

#include <cerrno>
#include <cstring>

namespace racker {

Error::Error(std::string message, int err, ErrorKind kind)
    : std::runtime_error(std::move(message)), err_(err), kind_(kind) {}

Error Error::interrupted(std::string message, int sig) {
  Error e(std::move(message), EINTR, ErrorKind::interrupted);
  e.signal_ = sig;
  return e;
}

Error Error::with_context(const std::string& context) const {
  Error e(context + ": " + what(), err_, kind_);
  e.signal_ = signal_;
  return e;
}

int exit_status(const Error& e, ExitStyle style) {
  switch (e.kind()) {
    case ErrorKind::interrupted:
      return 128 + e.signal();  // as a shell reports a process a signal ended
    case ErrorKind::cannot_execute:
      if (style == ExitStyle::payload) return 126;
      break;
    case ErrorKind::command_not_found:
      if (style == ExitStyle::payload) return 127;
      break;
    default:
      break;
  }
  return style == ExitStyle::payload ? 125 : 1;
}

int http_status(const Error& e) {
  switch (e.kind()) {
    case ErrorKind::invalid:
      return 400;
    case ErrorKind::not_found:
      return 404;
    case ErrorKind::conflict:
      return 409;
    default:
      return 500;
  }
}

void throw_errno(const std::string& what, int err) {
  throw Error(what + ": " + std::strerror(err), err);
}

void throw_errno(const std::string& what) {
  throw_errno(what, errno);
}

}  // namespace racker
