// Naming the host limit a failed boot ran into, from systemd's log lines and the host's usage.
#include <gtest/gtest.h>

#include <map>
#include <string>

#include "engine/host_limits.hpp"

namespace racker::engine::host_limits {
namespace {

struct FakeHost {
  std::map<std::string, int64_t, std::less<>> sysctls = {
      {"fs.inotify.max_user_instances", 128}, {"fs.inotify.max_user_watches", 8192},
      {"kernel.keys.root_maxkeys", 200},      {"kernel.keys.maxkeys", 100},
      {"user.max_user_namespaces", 50},       {"kernel.pid_max", 32768},
      {"kernel.threads-max", 60000}};
  int64_t instances = 10, tasks = 300;
  HostProbe probe() {
    return {.sysctl = [this](std::string_view n) -> std::optional<int64_t> {
              auto it = sysctls.find(n);
              if (it == sysctls.end()) return std::nullopt;
              return it->second;
            },
            .inotify_instances = [this](uid_t) { return instances; },
            .tasks = [this] { return tasks; }};
  }
};

TEST(HostLimits, InotifyInstancesFromSystemdsMessage) {
  FakeHost h;
  h.instances = 127;
  auto l = diagnose("\n  [1.2] systemd[1]: Failed to create inotify object: Too many open files", 0,
                    h.probe());
  ASSERT_TRUE(l);
  EXPECT_EQ(l->sysctl, "fs.inotify.max_user_instances");
  EXPECT_EQ(describe(*l),
            "systemd could not create an inotify instance: fs.inotify.max_user_instances = 128 is "
            "exhausted (127 open under uid 0 now; raise it with sysctl -w "
            "fs.inotify.max_user_instances=1024)");
}

TEST(HostLimits, InotifyWatches) {
  FakeHost h;
  auto l = diagnose("Failed to add watch on /etc/x: No space left on device", 0, h.probe());
  ASSERT_TRUE(l);
  EXPECT_EQ(describe(*l),
            "systemd could not add an inotify watch: fs.inotify.max_user_watches = 8192 is "
            "exhausted (raise it with sysctl -w fs.inotify.max_user_watches=16384)");
}

TEST(HostLimits, KeysPerOwner) {
  FakeHost h;
  std::string log = "Failed to set up kernel keyring: Disk quota exceeded";
  EXPECT_EQ(diagnose(log, 0, h.probe())->sysctl, "kernel.keys.root_maxkeys");
  EXPECT_EQ(diagnose(log, 100000, h.probe())->sysctl, "kernel.keys.maxkeys");
}

TEST(HostLimits, UserNamespaces) {
  FakeHost h;
  auto l = diagnose("Failed to set up user namespacing: No space left on device", 0, h.probe());
  ASSERT_TRUE(l);
  EXPECT_EQ(l->sysctl, "user.max_user_namespaces");
  EXPECT_EQ(l->value, 50);
}

TEST(HostLimits, ForkFailureNamesTheLowerTaskLimitOnlyWhenNearIt) {
  FakeHost h;
  std::string log = "Failed to fork: Resource temporarily unavailable";
  EXPECT_FALSE(diagnose(log, 0, h.probe()));  // a pids cgroup, not the host
  h.tasks = 32700;
  auto l = diagnose(log, 0, h.probe());
  ASSERT_TRUE(l);
  EXPECT_EQ(l->sysctl, "kernel.pid_max");
  h.sysctls["kernel.threads-max"] = 30000;
  EXPECT_EQ(diagnose(log, 0, h.probe())->sysctl, "kernel.threads-max");
}

TEST(HostLimits, SilentInitFallsBackToTheHostsUsage) {
  FakeHost h;
  EXPECT_FALSE(diagnose("", 0, h.probe()));
  h.instances = 127;
  auto l = diagnose("", 0, h.probe());
  ASSERT_TRUE(l);
  EXPECT_EQ(describe(*l),
            "the host's inotify instances are used up: fs.inotify.max_user_instances = 128 is "
            "exhausted (127 open under uid 0 now; raise it with sysctl -w "
            "fs.inotify.max_user_instances=1024)");
}

TEST(HostLimits, UnrelatedFailureNamesNothing) {
  FakeHost h;
  EXPECT_FALSE(
      diagnose("Failed to mount /sys: Operation not permitted\nToo many open files", 0, h.probe()));
}

}  // namespace
}  // namespace racker::engine::host_limits
