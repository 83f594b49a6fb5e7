// Resolving functions of a library loaded with dlopen(): racker loads libcurl and libsystemd
// only when a command needs them, so that every other command starts without them.
#pragma once

#include <dlfcn.h>

#include <string>

namespace racker {

// Looks up name in lib and stores it in out (a function pointer typed from the library's
// header). Once error is set it stays set and later lookups are skipped, so a loader can
// resolve every symbol and check error once at the end.
template <typename T>
bool resolve_symbol(void* lib, const char* name, T& out, std::string& error) {
  if (!error.empty()) return false;
  ::dlerror();
  void* p = ::dlsym(lib, name);
  if (!p) {
    const char* e = ::dlerror();
    error = e ? e : std::string("undefined symbol: ") + name;
    return false;
  }
  out = reinterpret_cast<T>(p);
  return true;
}

// dlopen(name, RTLD_NOW | RTLD_LOCAL); on failure nullptr and error set to dlerror()'s text.
inline void* open_library(const char* name, std::string& error) {
  void* lib = ::dlopen(name, RTLD_NOW | RTLD_LOCAL);
  if (!lib) {
    const char* e = ::dlerror();
    error = e ? e : "unknown error";
  }
  return lib;
}

}  // namespace racker
