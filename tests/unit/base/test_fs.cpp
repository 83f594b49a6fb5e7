#include <dirent.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <functional>
#include <thread>

#include "base/error.hpp"
#include "base/file_lock.hpp"
#include "base/fs.hpp"
#include "base/strings.hpp"
#include "test_support.hpp"

using namespace racker;
using test::FdLimit;
using test::open_fds;

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

// Where to make a large scratch tree: tmpfs if there is one (tens of thousands of mkdirs on a disk
// filesystem can take seconds, more so right after as many were deleted), else /tmp.
std::string scratch_parent() {
  return access("/dev/shm", W_OK | X_OK) == 0 ? "/dev/shm" : "/tmp";
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

TEST(Files, MkdirP) {
  char tmpl[] = "/tmp/racker-unit-XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  std::string dir = tmpl;
  mkdir_p(dir + "/x//y/z/");  // doubled and trailing slashes
  auto is_dir = [](const std::string& p) {
    struct stat s;
    return ::stat(p.c_str(), &s) == 0 && S_ISDIR(s.st_mode);
  };
  EXPECT_TRUE(is_dir(dir + "/x/y/z"));
  mkdir_p(dir + "/x/y/z");  // there already
  mkdir_p(dir + "/x/y/w", 0700);
  struct stat st;
  ASSERT_EQ(::stat((dir + "/x/y/w").c_str(), &st), 0);
  mode_t mask = ::umask(0);
  ::umask(mask);
  EXPECT_EQ(st.st_mode & 07777, 0700u & ~mask);
  // through a symlink to a directory, as before
  ASSERT_EQ(symlink("x/y", (dir + "/l").c_str()), 0);
  mkdir_p(dir + "/l/v");
  EXPECT_TRUE(is_dir(dir + "/x/y/v"));
  // a file on the way, or at the end: an error naming the path
  write_file_atomic(dir + "/f", "");
  EXPECT_THROW(mkdir_p(dir + "/f"), Error);
  EXPECT_THROW(mkdir_p(dir + "/f/g/h"), Error);
  EXPECT_FALSE(path_exists(dir + "/f/g"));
  mkdir_p("/");
  remove_tree(dir);
}

// A tree far deeper than PATH_MAX allows (made step by step with *at calls): remove_tree must
// neither recurse per level (stack overflow) nor hold a descriptor per level (EMFILE, and the
// tree silently left behind). Symlinks deep inside, beyond any descriptor kept open, point out
// of the tree and must be removed, never followed; siblings at many levels must all go.
TEST(Files, RemoveTreeOfAVeryDeepTreeWithFewDescriptors) {
  std::string tmpl = scratch_parent() + "/racker-unit-XXXXXX";
  ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
  std::string base = tmpl, top = base + "/top", outside = base + "/outside";
  mkdir_p(outside + "/keep");
  write_file_atomic(outside + "/keep/f", "kept");
  constexpr int kLevels = 30000;
  int fd = ::open(base.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  for (int i = 0; i < kLevels; ++i) {
    const char* name = i == 0 ? "top" : "d";
    ASSERT_EQ(::mkdirat(fd, name, 0755), 0) << "level " << i;
    if (i % 1000 == 999) {  // a sibling directory, a file and a symlink out of the tree
      ASSERT_EQ(::mkdirat(fd, "sib", 0755), 0);
      ASSERT_EQ(::mkdirat(fd, "sib/sub", 0755), 0);
      int f = ::openat(fd, "sib/sub/file", O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
      ASSERT_GE(f, 0);
      ::close(f);
      ASSERT_EQ(::symlinkat(outside.c_str(), fd, "out"), 0);
      ASSERT_EQ(::symlinkat((outside + "/keep").c_str(), fd, "sib/keep"), 0);
    }
    int next = ::openat(fd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    ::close(fd);
    ASSERT_GE(next, 0) << "level " << i;
    fd = next;
  }
  ::close(fd);

  size_t fds = open_fds();
  {
    FdLimit limit(64);  // one descriptor per level would run out at once
    remove_tree(top);
  }
  EXPECT_FALSE(path_exists(top));
  EXPECT_EQ(list_dir(base), std::vector<std::string>{"outside"});
  EXPECT_EQ(read_file(outside + "/keep/f"), "kept");  // the symlinks were not followed
  EXPECT_EQ(open_fds(), fds);                         // and no descriptor leaked
  remove_tree(base);
  EXPECT_FALSE(path_exists(base));
}

// What cannot be removed (here an immutable file deep down) stays, with the directories that lead
// to it; everything else still goes, and nothing is reported: remove_tree is best effort.
TEST(Files, RemoveTreeRemovesAllItCanOfADeepTree) {
  std::string tmpl = scratch_parent() + "/racker-unit-XXXXXX";
  ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
  std::string base = tmpl;
  constexpr int kLevels = 3000;
  int fd = ::open(base.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  for (int i = 0; i < kLevels; ++i) {
    ASSERT_EQ(::mkdirat(fd, "d", 0755), 0);
    ASSERT_EQ(::mkdirat(fd, "gone", 0755), 0);
    ASSERT_EQ(::symlinkat("d", fd, "gone/link"), 0);
    int next = ::openat(fd, "d", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    ::close(fd);
    ASSERT_GE(next, 0);
    fd = next;
  }
  auto set_immutable = [](int dirfd, bool on) {
    int f = ::openat(dirfd, "stuck", O_RDONLY | O_CREAT | O_CLOEXEC, 0644);
    int flags = 0;
    bool ok = f >= 0 && ::ioctl(f, FS_IOC_GETFLAGS, &flags) == 0;
    flags = on ? flags | FS_IMMUTABLE_FL : flags & ~FS_IMMUTABLE_FL;
    ok = ok && ::ioctl(f, FS_IOC_SETFLAGS, &flags) == 0;
    if (f >= 0) ::close(f);
    return ok;
  };
  int bottom = fd;  // kept open: the flag is cleared again whatever happens
  struct Cleanup {
    std::function<void()> f;
    ~Cleanup() { f(); }
  } cleanup{[&] {
    set_immutable(bottom, false);
    ::close(bottom);
    remove_tree(base);
  }};
  if (!set_immutable(bottom, true)) GTEST_SKIP() << "cannot make an immutable file here";

  size_t fds = open_fds();
  {
    FdLimit limit(64);
    remove_tree(base + "/d");
  }
  EXPECT_EQ(open_fds(), fds);
  fd = ::open((base + "/d").c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  for (int i = 1; i < kLevels && fd >= 0; ++i) {  // the way down to it is all that is left
    auto names = list_dir("/proc/self/fd/" + std::to_string(fd));
    EXPECT_EQ(names, std::vector<std::string>{"d"}) << "level " << i;
    int next = ::openat(fd, "d", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    ::close(fd);
    fd = next;
    if (names != std::vector<std::string>{"d"}) break;
  }
  ASSERT_GE(fd, 0);
  EXPECT_EQ(list_dir("/proc/self/fd/" + std::to_string(fd)), std::vector<std::string>{"stuck"});
  ::close(fd);
  EXPECT_TRUE(set_immutable(bottom, false));
  remove_tree(base + "/d");
  EXPECT_FALSE(path_exists(base + "/d"));
}

TEST(Files, RemoveTreeOfAFileASymlinkOrNothing) {
  char tmpl[] = "/tmp/racker-unit-XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  std::string dir = tmpl;
  remove_tree(dir + "/missing");  // nothing to do, no error
  write_file_atomic(dir + "/f", "f");
  remove_tree(dir + "/f");
  EXPECT_FALSE(path_exists(dir + "/f"));
  mkdir_p(dir + "/target/sub");
  ASSERT_EQ(symlink("target", (dir + "/link").c_str()), 0);
  remove_tree(dir + "/link");  // the symlink only
  EXPECT_EQ(list_dir(dir), std::vector<std::string>{"target"});
  EXPECT_EQ(list_dir(dir + "/target"), std::vector<std::string>{"sub"});
  remove_tree(dir);
  EXPECT_FALSE(path_exists(dir));
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
