#include "engine/idrange.hpp"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <set>

#include "base/fs.hpp"
#include "test_support.hpp"

using namespace racker;
using namespace racker::engine;
using racker::test::TempDir;

TEST(IdRange, SubidRangesOfOneUser) {
  std::string text =
      "# comment\nalice:100000:65536\ncontainers:2147483648:131072\nbad line\n"
      "containers:x:5\ncontainers:300000:0\ncontainers:500000:65536\n";
  auto r = subid_ranges(text, "containers");
  ASSERT_EQ(r.size(), 2u);
  EXPECT_EQ(r[0].start, 2147483648u);
  EXPECT_EQ(r[0].count, 131072u);
  EXPECT_EQ(r[1].start, 500000u);
  EXPECT_TRUE(subid_ranges(text, "bob").empty());
}

TEST(IdRange, FreeRangeAvoidsEveryoneElses) {
  EXPECT_EQ(free_subid_range("", 65536).start, 2147483648u);
  auto r = free_subid_range("alice:2147483000:100000\nbob:100000:65536\n", 65536);
  EXPECT_EQ(r.start, 2147583000u);  // after the highest range in use
  EXPECT_EQ(r.count, 65536u);
  // near the top: what is left, never beyond 2^32-2
  r = free_subid_range("x:2147483648:2147418112\n", 2147483648ULL);
  EXPECT_EQ(r.start, 4294901760u);
  EXPECT_EQ(r.count, 65535u);
}

TEST(IdRange, LeasesAreDisjointAndComeBack) {
  TempDir tmp;
  std::string etc = tmp.path() + "/etc", state = tmp.path() + "/run/racker";
  mkdir_p(etc);
  write_file_atomic(etc + "/subuid", "alice:100000:65536\ncontainers:1000000:196608\n");
  write_file_atomic(etc + "/subgid", "containers:2000000:196608\n");
  std::vector<std::string> owners;
  std::set<uint32_t> uids;
  std::vector<IdRange> got;
  for (int i = 0; i < 3; ++i) {
    owners.push_back(tmp.path() + "/c" + std::to_string(i));
    mkdir_p(owners.back());
    got.push_back(lease_range(state, owners.back(), etc));
    uids.insert(got.back().uid);
    EXPECT_EQ(got.back().gid - 2000000, got.back().uid - 1000000);
  }
  EXPECT_EQ(uids, (std::set<uint32_t>{1000000, 1065536, 1131072}));
  std::string extra = tmp.path() + "/c3";
  mkdir_p(extra);
  auto err = test::error_of([&] { lease_range(state, extra, etc); });
  EXPECT_NE(err.find("all 3 id ranges"), std::string::npos) << err;
  // release by its owner only; a container directory that is gone frees its range too
  release_range(state, got[1], owners[0]);
  EXPECT_NE(test::error_of([&] { lease_range(state, extra, etc); }), "");
  release_range(state, got[1], owners[1]);
  EXPECT_EQ(lease_range(state, extra, etc).uid, got[1].uid);
  remove_tree(owners[2]);
  std::string more = tmp.path() + "/c4";
  mkdir_p(more);
  EXPECT_EQ(lease_range(state, more, etc).uid, got[2].uid);
}

TEST(IdRange, SubidFilesGetAnEntryWhenAbsent) {
  TempDir tmp;
  std::string etc = tmp.path() + "/etc", state = tmp.path() + "/state";
  mkdir_p(etc);
  write_file_atomic(etc + "/subuid", "alice:2147483648:65536");  // no final newline
  std::string owner = tmp.path() + "/c";
  mkdir_p(owner);
  auto r = lease_range(state, owner, etc);
  EXPECT_EQ(r.uid, 2147549184u);  // after alice's
  EXPECT_EQ(r.gid, 2147483648u);  // subgid did not exist: made
  EXPECT_EQ(read_file(etc + "/subuid"),
            "alice:2147483648:65536\ncontainers:2147549184:2147418111\n");
  EXPECT_EQ(subid_ranges(read_file(etc + "/subgid"), "containers").size(), 1u);
}

TEST(IdRange, ShiftOwnersKeepsHardLinksAndSetId) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root (chown)";
  TempDir tmp;
  std::string d = tmp.path() + "/tree";
  mkdir_p(d + "/sub");
  write_file_atomic(d + "/sub/f", "x");
  ASSERT_EQ(::link((d + "/sub/f").c_str(), (d + "/g").c_str()), 0);
  ASSERT_EQ(::chown((d + "/sub/f").c_str(), 5, 6), 0);
  write_file_atomic(d + "/suid", "x", 04755);
  ASSERT_EQ(::chmod((d + "/suid").c_str(), 04755), 0);
  ASSERT_EQ(::symlink("nowhere", (d + "/l").c_str()), 0);
  shift_owners(d, {100000, 200000, 65536});
  struct stat st;
  ASSERT_EQ(::lstat((d + "/g").c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, 100005u);  // shifted once, not once per link
  EXPECT_EQ(st.st_gid, 200006u);
  ASSERT_EQ(::lstat((d + "/suid").c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, 100000u);
  EXPECT_EQ(st.st_mode & 07777, 04755u);
  ASSERT_EQ(::lstat((d + "/l").c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, 100000u);
  shift_owners(d + "/sub", {100000, 200000, 65536}, true);
  ASSERT_EQ(::lstat((d + "/sub/f").c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, 100000u);
}
