// The init's errors cross the fork as messages: text, errno and kind arrive intact.
#include <gtest/gtest.h>

#include <sys/socket.h>

#include <cerrno>
#include <stdexcept>

#include "base/fd.hpp"
#include "runtime/sync.hpp"

namespace racker::runtime {
namespace {

Error round_trip(const std::exception& e) {
  int sp[2];
  EXPECT_EQ(::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sp), 0);
  UniqueFd a(sp[0]), b(sp[1]);
  EXPECT_TRUE(send_error(a.get(), e));
  SyncMessage m;
  EXPECT_TRUE(sync_recv(b.get(), &m));
  EXPECT_EQ(m.type, SyncType::error);
  return sync_error(m);
}

TEST(Sync, ErrorKeepsTextErrnoAndKind) {
  auto e = round_trip(Error("exec: \"x\": executable file not found in $PATH", ENOENT,
                            ErrorKind::command_not_found));
  EXPECT_STREQ(e.what(), "exec: \"x\": executable file not found in $PATH");
  EXPECT_EQ(e.err(), ENOENT);
  EXPECT_EQ(e.kind(), ErrorKind::command_not_found);
  EXPECT_EQ(round_trip(Error("x", EACCES, ErrorKind::cannot_execute)).kind(),
            ErrorKind::cannot_execute);
}

TEST(Sync, ForeignExceptionsAndBadKindsAreFailures) {
  auto e = round_trip(std::runtime_error("bad_alloc"));
  EXPECT_STREQ(e.what(), "bad_alloc");
  EXPECT_EQ(e.kind(), ErrorKind::failed);
  SyncMessage m;
  m.type = SyncType::error;
  m.kind = 9999;  // a message from a newer or broken peer
  m.len = 1;
  m.text[0] = 'x';
  EXPECT_EQ(sync_error(m).kind(), ErrorKind::failed);
}

}  // namespace
}  // namespace racker::runtime
