#include "base/error.hpp"

#include <cerrno>
#include <cstring>

namespace racker {

Error::Error(std::string message, int err) : std::runtime_error(std::move(message)), err_(err) {}

Error Error::with_context(const std::string& context) const {
  return Error(context + ": " + what(), err_);
}

void throw_errno(const std::string& what, int err) {
  throw Error(what + ": " + std::strerror(err), err);
}

void throw_errno(const std::string& what) {
  throw_errno(what, errno);
}

}  // namespace racker
