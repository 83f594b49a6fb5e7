// Helpers the unit tests share: a scratch directory that removes itself, the message an
// operation fails with, environment variables set for a test's lifetime, and a lowered
// RLIMIT_NOFILE with an open-descriptor count.
#pragma once

#include <dirent.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/resource.h>

#include <functional>
#include <map>
#include <optional>
#include <string>

#include "base/error.hpp"
#include "base/fs.hpp"

namespace racker::test {

// A fresh directory /tmp/PREFIX-XXXXXX (or below `parent`), removed with all it holds when the
// object goes.
class TempDir {
 public:
  explicit TempDir(const std::string& prefix = "racker-unit", const std::string& parent = "/tmp") {
    std::string tmpl = parent + "/" + prefix + "-XXXXXX";
    if (!::mkdtemp(tmpl.data())) throw_errno("mkdtemp " + tmpl);
    path_ = tmpl;
  }
  ~TempDir() { remove_tree(path_); }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// The message of the racker::Error that fn throws, or "(no error)" when it returns (any other
// exception fails the test).
inline std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

// Sets and unsets environment variables; each one it touched gets its old value (or absence)
// back when the object goes.
class ScopedEnv {
 public:
  ScopedEnv() = default;
  ~ScopedEnv() {
    for (const auto& [name, value] : saved_) {
      if (value)
        ::setenv(name.c_str(), value->c_str(), 1);
      else
        ::unsetenv(name.c_str());
    }
  }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

  void set(const std::string& name, const std::string& value) {
    save(name);
    ::setenv(name.c_str(), value.c_str(), 1);
  }
  void unset(const std::string& name) {
    save(name);
    ::unsetenv(name.c_str());
  }

 private:
  void save(const std::string& name) {
    if (saved_.count(name)) return;  // the value from before the first change is the one to restore
    const char* v = ::getenv(name.c_str());
    saved_[name] = v ? std::optional<std::string>(v) : std::nullopt;
  }
  std::map<std::string, std::optional<std::string>> saved_;
};

// How many descriptors this process has open (entries of /proc/self/fd, "." and ".." included:
// compare two counts, not a count with a number).
inline size_t open_fds() {
  size_t n = 0;
  if (DIR* d = ::opendir("/proc/self/fd")) {
    while (::readdir(d)) ++n;
    ::closedir(d);
  }
  return n;
}

// Lowers the soft RLIMIT_NOFILE for its lifetime.
class FdLimit {
 public:
  explicit FdLimit(rlim_t soft) {
    EXPECT_EQ(::getrlimit(RLIMIT_NOFILE, &old_), 0);
    rlimit l = old_;
    l.rlim_cur = soft;
    EXPECT_EQ(::setrlimit(RLIMIT_NOFILE, &l), 0);
  }
  ~FdLimit() { EXPECT_EQ(::setrlimit(RLIMIT_NOFILE, &old_), 0); }
  FdLimit(const FdLimit&) = delete;
  FdLimit& operator=(const FdLimit&) = delete;

 private:
  rlimit old_{};
};

}  // namespace racker::test
