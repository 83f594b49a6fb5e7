#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

#include "base/fs.hpp"
#include "engine/flat_rootfs.hpp"

using namespace racker;

namespace {

std::string temp_dir() {
  char tmpl[] = "/tmp/racker-flat-XXXXXX";
  const char* d = ::mkdtemp(tmpl);
  return d ? d : "";
}

bool exists(const std::string& p) {
  struct stat st;
  return ::lstat(p.c_str(), &st) == 0;
}

}  // namespace

// overlayfs semantics without overlayfs: later layers replace entries, 0:0 devices delete,
// opaque directories hide the lower content, and a symlink from a lower layer is replaced, never
// followed, when a higher layer has a directory there.
TEST(FlatRootfs, LayersAppliedLikeOverlayfs) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root (whiteout devices, trusted xattrs)";
  std::string t = temp_dir();
  ASSERT_FALSE(t.empty());
  std::string l1 = t + "/l1", l2 = t + "/l2", out = t + "/out", outside = t + "/outside";
  mkdir_p(l1 + "/a");
  mkdir_p(l1 + "/opq");
  mkdir_p(outside);
  write_file_atomic(l1 + "/a/x", "old x");
  write_file_atomic(l1 + "/a/keep", "kept");
  write_file_atomic(l1 + "/del", "deleted later");
  write_file_atomic(l1 + "/opq/old", "hidden later");
  ASSERT_EQ(::symlink(outside.c_str(), (l1 + "/s").c_str()), 0);
  ASSERT_EQ(::chmod((l1 + "/a/keep").c_str(), 0640), 0);
  ASSERT_EQ(::chown((l1 + "/a/keep").c_str(), 1234, 5678), 0);

  mkdir_p(l2 + "/a");
  mkdir_p(l2 + "/opq");
  mkdir_p(l2 + "/s");
  write_file_atomic(l2 + "/a/x", "new x");
  write_file_atomic(l2 + "/opq/new", "visible");
  write_file_atomic(l2 + "/s/z", "inside");
  ASSERT_EQ(::mknod((l2 + "/del").c_str(), S_IFCHR | 0, makedev(0, 0)), 0);
  ASSERT_EQ(::setxattr((l2 + "/opq").c_str(), "trusted.overlay.opaque", "y", 1, 0), 0);

  engine::flatten_layers({l1, l2}, out);
  EXPECT_EQ(read_file(out + "/a/x"), "new x");
  EXPECT_EQ(read_file(out + "/a/keep"), "kept");
  struct stat st;
  ASSERT_EQ(::stat((out + "/a/keep").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0640u);
  EXPECT_EQ(st.st_uid, 1234u);
  EXPECT_EQ(st.st_gid, 5678u);
  EXPECT_FALSE(exists(out + "/del"));
  EXPECT_FALSE(exists(out + "/opq/old"));
  EXPECT_EQ(read_file(out + "/opq/new"), "visible");
  char v[4];
  EXPECT_LT(::getxattr((out + "/opq").c_str(), "trusted.overlay.opaque", v, sizeof v), 0);
  ASSERT_EQ(::lstat((out + "/s").c_str(), &st), 0);
  EXPECT_TRUE(S_ISDIR(st.st_mode));
  EXPECT_EQ(read_file(out + "/s/z"), "inside");
  EXPECT_FALSE(exists(outside + "/z")) << "wrote through a lower layer's symlink";
  remove_tree(t);
}
