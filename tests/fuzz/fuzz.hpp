// Shared by the libFuzzer targets. racker::Error is how the parsers reject bad input, so it is
// the expected outcome; every other exception escaping a parser is a bug (racker promises a
// one-line error, not, say, a raw nlohmann::json exception), as are broken properties.
#pragma once

#include <cxxabi.h>

#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>
#include <typeinfo>

#include "base/error.hpp"

namespace racker::fuzz {

// Reports a bug and aborts: libFuzzer saves the input as a crash.
[[noreturn]] inline void fail(const std::string& what) {
  std::fprintf(stderr, "\n==== racker fuzz: BUG: %s\n", what.c_str());
  std::fflush(stderr);
  std::abort();
}

inline std::string type_name(const std::exception& e) {
  int status = 0;
  char* demangled = abi::__cxa_demangle(typeid(e).name(), nullptr, nullptr, &status);
  std::string out = status == 0 && demangled ? demangled : typeid(e).name();
  std::free(demangled);
  return out;
}

// Runs fn(); true when it returned, false when it threw racker::Error. Any other exception
// is a bug.
template <typename Fn>
bool accepts(const char* what, Fn&& fn) {
  try {
    fn();
    return true;
  } catch (const Error&) {
    return false;
  } catch (const std::exception& e) {
    fail(std::string(what) + ": foreign exception " + type_name(e) + " escaped: " + e.what());
  } catch (...) {
    fail(std::string(what) + ": a non-std exception escaped");
  }
}

}  // namespace racker::fuzz
