#include <dirent.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <thread>

#include "base/error.hpp"
#include "base/file_lock.hpp"
#include "base/fs.hpp"
#include "base/strings.hpp"

using namespace racker;

namespace {

std::vector<std::string> list_dir(const std::string& dir) {
  std::vector<std::string> out;
  if (DIR* d = ::opendir(dir.c_str())) {
    while (auto* e = ::readdir(d))
      if (std::string(e->d_name) != "." && std::string(e->d_name) != "..") out.push_back(e->d_name);
    ::closedir(d);
  }
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace

TEST(CleanPath, CollapsesDotsAndSlashes) {
  EXPECT_EQ(clean_path("/a//b/./c/"), "/a/b/c");
  EXPECT_EQ(clean_path("/a/b/../c"), "/a/c");
  EXPECT_EQ(clean_path("/../../x"), "/x");
  EXPECT_EQ(clean_path("a/../../b"), "../b");
  EXPECT_EQ(clean_path(""), ".");
  EXPECT_EQ(clean_path("/"), "/");
}

TEST(JoinUnder, NeverClimbsAboveRoot) {
  EXPECT_EQ(join_under("/r", "/etc/passwd"), "/r/etc/passwd");
  EXPECT_EQ(join_under("/r/", "../../etc"), "/r/etc");
  EXPECT_EQ(join_under("/r", "/"), "/r");
}

TEST(Strings, SplitAndParse) {
  EXPECT_EQ(split("a:b::c", ':'), (std::vector<std::string>{"a", "b", "", "c"}));
  EXPECT_EQ(parse_int("-12"), -12);
  EXPECT_FALSE(parse_int("12x"));
  EXPECT_FALSE(parse_int(""));
  EXPECT_FALSE(parse_uint("-1"));
  EXPECT_EQ(parse_uint("18446744073709551615"), UINT64_MAX);
  EXPECT_FALSE(parse_uint("18446744073709551616"));
  EXPECT_EQ(trim("  x y \n"), "x y");
}

TEST(Files, AtomicWriteAndRemoveTree) {
  char tmpl[] = "/tmp/racker-unit-XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  std::string dir = tmpl;
  mkdir_p(dir + "/a/b/c");
  write_file_atomic(dir + "/a/b/c/f", "hello");
  EXPECT_EQ(read_file(dir + "/a/b/c/f"), "hello");
  EXPECT_EQ(list_dir(dir + "/a/b/c"), std::vector<std::string>{"f"});  // no temporary file left
  // a write that fails (the path is a directory that is not empty) removes its temporary file
  mkdir_p(dir + "/a/b/c/d/e");
  EXPECT_THROW(write_file_atomic(dir + "/a/b/c/d", "x"), Error);
  EXPECT_EQ(list_dir(dir + "/a/b/c"), (std::vector<std::string>{"d", "f"}));
  EXPECT_FALSE(read_file_if_exists(dir + "/missing"));
  try {
    read_file(dir + "/missing");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()), "open " + dir + "/missing: No such file or directory");
    EXPECT_EQ(e.err(), ENOENT);
  }
  ASSERT_EQ(symlink("/etc", (dir + "/a/link").c_str()), 0);
  remove_tree(dir);
  EXPECT_FALSE(path_exists(dir));
  EXPECT_TRUE(path_exists("/etc/passwd"));  // the symlink was removed, not followed
}

TEST(FileLock, TransientFileGoesWithTheLockAndExcludesLateComers) {
  char tmpl[] = "/tmp/racker-unit-XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  std::string dir = tmpl, path = dir + "/x.lock";
  std::atomic<int> inside{0}, most{0};
  auto worker = [&] {
    for (int i = 0; i < 200; ++i) {
      FileLock lock(path, FileLock::File::transient);
      int now = ++inside;
      most = std::max(most.load(), now);
      --inside;
    }
  };
  std::thread a(worker), b(worker), c(worker);
  a.join();
  b.join();
  c.join();
  EXPECT_EQ(most.load(), 1);  // never two holders, though the file comes and goes
  EXPECT_EQ(list_dir(dir), std::vector<std::string>{});  // the last holder removed it
  { FileLock kept(path); }
  EXPECT_EQ(list_dir(dir), std::vector<std::string>{"x.lock"});
  remove_tree(dir);
}

TEST(Error, ContextIsPrefixed) {
  Error e("connection reset", ECONNRESET);
  auto c = e.with_context("fetch layer").with_context("pull x");
  EXPECT_STREQ(c.what(), "pull x: fetch layer: connection reset");
  EXPECT_EQ(c.err(), ECONNRESET);
}
