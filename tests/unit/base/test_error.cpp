// Error kinds and the one mapping from an error to an exit status or an API status code.
#include <gtest/gtest.h>

#include <cerrno>
#include <csignal>

#include "base/error.hpp"

namespace racker {
namespace {

TEST(ErrorKind, ContextKeepsKindErrnoAndSignal) {
  Error e("exec: \"nope\": executable file not found in $PATH", ENOENT,
          ErrorKind::command_not_found);
  auto c = e.with_context("run x");
  EXPECT_STREQ(c.what(), "run x: exec: \"nope\": executable file not found in $PATH");
  EXPECT_EQ(c.kind(), ErrorKind::command_not_found);
  EXPECT_EQ(c.err(), ENOENT);
  auto i = Error::interrupted("boot", SIGTERM).with_context("run y");
  EXPECT_EQ(i.kind(), ErrorKind::interrupted);
  EXPECT_EQ(i.signal(), SIGTERM);
  EXPECT_EQ(i.err(), EINTR);
}

TEST(ErrorKind, ExitStatusAsDockerGivesIt) {
  // run/create/start/exec: 125 for racker's own failures whatever the errno
  EXPECT_EQ(exit_status(Error("pull failed", ENOENT), ExitStyle::payload), 125);
  EXPECT_EQ(exit_status(Error("bad flag", EINVAL, ErrorKind::invalid), ExitStyle::payload), 125);
  EXPECT_EQ(exit_status(Error("denied", EACCES), ExitStyle::payload), 125);
  EXPECT_EQ(exit_status(Error("x", EACCES, ErrorKind::cannot_execute), ExitStyle::payload), 126);
  EXPECT_EQ(exit_status(Error("x", ENOENT, ErrorKind::command_not_found), ExitStyle::payload), 127);
  EXPECT_EQ(exit_status(Error::interrupted("x", SIGINT), ExitStyle::payload), 130);
  // every other command: 1, and a signal still 128+N
  EXPECT_EQ(exit_status(Error("x", ENOENT, ErrorKind::command_not_found), ExitStyle::plain), 1);
  EXPECT_EQ(exit_status(Error("x", 0, ErrorKind::not_found), ExitStyle::plain), 1);
  EXPECT_EQ(exit_status(Error::interrupted("x", SIGTERM), ExitStyle::plain), 143);
}

TEST(ErrorKind, HttpStatusAsTheDockerApiGivesIt) {
  EXPECT_EQ(http_status(Error("no such container: x", ENOENT, ErrorKind::not_found)), 404);
  EXPECT_EQ(http_status(Error("name in use", EEXIST, ErrorKind::conflict)), 409);
  EXPECT_EQ(http_status(Error("bad", EINVAL, ErrorKind::invalid)), 400);
  EXPECT_EQ(http_status(Error("disk full", ENOSPC)), 500);
}

}  // namespace
}  // namespace racker
