// Stdio redirection, file copies and directory listings that engine/ builds on.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <string>

#include "base/error.hpp"
#include "base/fd.hpp"
#include "base/fs.hpp"
#include "test_support.hpp"

namespace racker {
namespace {

// a scratch directory: dir is its path
struct Scratch : test::TempDir {
  Scratch() : TempDir("racker-fdh") {}
  const std::string& dir = path();
};

TEST(Redirect, PutsAnFdOverStdoutAndBack) {
  Scratch s;
  struct stat before, during, after;
  ASSERT_EQ(::fstat(1, &before), 0);
  {
    UniqueFd log = open_log(s.dir + "/log");
    Redirect r(1, log.get());
    ASSERT_EQ(::fstat(1, &during), 0);
    ASSERT_TRUE(write_all(1, "hello\n", 6));
  }
  ASSERT_EQ(::fstat(1, &after), 0);
  EXPECT_EQ(read_file(s.dir + "/log"), "hello\n");
  EXPECT_NE(during.st_ino, before.st_ino);
  EXPECT_EQ(after.st_ino, before.st_ino);
  EXPECT_EQ(after.st_dev, before.st_dev);
  EXPECT_THROW(open_log(s.dir + "/missing/log"), Error);
}

TEST(CopyFile, ModeTimesAndNoSymlinkUnlessAsked) {
  Scratch s;
  write_file_atomic(s.dir + "/a", "data", 0600);
  ASSERT_EQ(::symlink("a", (s.dir + "/link").c_str()), 0);
  struct timespec ts[2] = {{1000, 0}, {2000, 0}};
  copy_file(s.dir + "/a", s.dir + "/b", {.mode = 04751, .times = ts});
  struct stat st;
  ASSERT_EQ(::stat((s.dir + "/b").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 04751u);
  EXPECT_EQ(st.st_mtim.tv_sec, 2000);
  EXPECT_EQ(read_file(s.dir + "/b"), "data");
  copy_file(s.dir + "/link", s.dir + "/c", {});  // followed by default
  EXPECT_EQ(read_file(s.dir + "/c"), "data");
  try {
    copy_file(s.dir + "/link", s.dir + "/d", {.follow_source = false});
    ADD_FAILURE() << "copied through a symlink";
  } catch (const Error& e) {
    EXPECT_EQ(e.err(), ELOOP);
    EXPECT_NE(std::string(e.what()).find("/link"), std::string::npos) << e.what();
  }
  // the destination is never written through a symlink
  ASSERT_EQ(::symlink("/etc/passwd-racker-never", (s.dir + "/trap").c_str()), 0);
  EXPECT_THROW(copy_file(s.dir + "/a", s.dir + "/trap", {}), Error);
  EXPECT_FALSE(path_exists("/etc/passwd-racker-never"));
}

TEST(DirNames, ListsBothWaysAndTellsMissingFromUnreadable) {
  Scratch s;
  for (auto* n : {"x", "y", ".hidden"}) write_file_atomic(s.dir + "/" + n, "");
  auto names = dir_names(s.dir);
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{".hidden", "x", "y"}));
  UniqueFd fd(::open(s.dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  auto at = dir_names_at(fd.get(), s.dir);
  std::sort(at.begin(), at.end());
  EXPECT_EQ(at, names);
  EXPECT_EQ(dir_names_at(fd.get(), s.dir).size(), 3u);  // again: dirfd's offset untouched
  EXPECT_TRUE(dir_names(s.dir + "/none").empty());
  EXPECT_THROW(dir_names(s.dir + "/x"), Error);  // a file, not a directory
}

}  // namespace
}  // namespace racker
