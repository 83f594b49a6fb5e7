#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "engine/foreign_arch.hpp"

using namespace racker::engine;

TEST(ForeignArch, NamesAndNativeArchitectures) {
  EXPECT_EQ(qemu_arch_of("arm64"), "aarch64");
  EXPECT_EQ(qemu_arch_of("no-such-arch"), "");
  EXPECT_TRUE(runs_natively(host_oci_arch()));
}

TEST(ForeignArch, GuestKillNamesTheSignalAsTheGuestsKillDoes) {
  using V = std::vector<std::string>;
  EXPECT_EQ(guest_kill_argv("SIGRTMIN+3"), (V{"sh", "-c", "kill -s RTMIN+3 1"}));
  EXPECT_EQ(guest_kill_argv("RTMIN+3"), (V{"sh", "-c", "kill -s RTMIN+3 1"}));
  EXPECT_EQ(guest_kill_argv("SIGTERM"), (V{"sh", "-c", "kill -s TERM 1"}));
}
