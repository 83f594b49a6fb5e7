// The systemd cgroup driver's pure parts: cgroupsPath parsing, machine names, the unit
// properties made from linux.resources, and where an exec joins a booted container.
#include <cstdint>
#include <limits>
#include <string>

#include <gtest/gtest.h>

#include "base/error.hpp"
#include "runtime/cgroups.hpp"
#include "runtime/cgroups_internal.hpp"
#include "runtime/systemd_bus.hpp"

namespace racker::runtime {
namespace {

using namespace cgroups_internal;
using systemd::Property;

constexpr uint64_t kInfinity = std::numeric_limits<uint64_t>::max();

const Property* find(const std::vector<Property>& props, const std::string& name) {
  for (const auto& p : props)
    if (p.name == name) return &p;
  return nullptr;
}

TEST(SystemdScopeName, SlicePrefixName) {
  auto s = systemd::parse_scope_path("system.slice:racker:abc");
  EXPECT_EQ(s.slice, "system.slice");
  EXPECT_EQ(s.unit, "racker-abc.scope");
  s = systemd::parse_scope_path("machine.slice:racker:0123456789abcdef");
  EXPECT_EQ(s.slice, "machine.slice");
  EXPECT_EQ(s.unit, "racker-0123456789abcdef.scope");
}

TEST(SystemdScopeName, EmptyPartsAndExplicitScope) {
  auto s = systemd::parse_scope_path(":docker:x");
  EXPECT_EQ(s.slice, "system.slice");
  EXPECT_EQ(s.unit, "docker-x.scope");
  s = systemd::parse_scope_path("user.slice::mine.scope");
  EXPECT_EQ(s.unit, "mine.scope");
}

TEST(SystemdScopeName, RefusesOtherForms) {
  for (const char* bad : {"/racker/x", "racker", "a:b", "a:b:c:d", "notaslice:p:n",
                          "system.slice:p:", "system.slice:p:n.slice", "system.slice:p/q:n",
                          "system.slice:p:n/../../x"}) {
    try {
      systemd::parse_scope_path(bad);
      ADD_FAILURE() << "accepted " << bad;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(std::string("\"") + bad + "\""), std::string::npos)
          << e.what();
    }
  }
}

TEST(SystemdScopeName, CgroupfsPathIsWhereSystemdPutsTheScope) {
  EXPECT_EQ(cgroup_path_below_root("machine.slice:racker:abc"), "/machine.slice/racker-abc.scope");
  EXPECT_EQ(cgroup_path_below_root("machine-foo.slice:racker:abc"),
            "/machine.slice/machine-foo.slice/racker-abc.scope");
  EXPECT_EQ(cgroup_path_below_root("/racker/abc"), "/racker/abc");
}

TEST(SystemdMachineName, OnlyHostnameCharacters) {
  EXPECT_EQ(systemd::machine_name("box"), "box");
  EXPECT_EQ(systemd::machine_name("my_box.1"), "my-box.1");
  EXPECT_EQ(systemd::machine_name("-x-"), "x");
  EXPECT_EQ(systemd::machine_name("___"), "racker");
  EXPECT_EQ(systemd::machine_name(std::string(100, 'a')).size(), 64u);
}

TEST(SystemdProperties, DelegatedScopeWithoutResources) {
  auto p = scope_properties("machine.slice", "racker container x", true, nullptr);
  ASSERT_TRUE(find(p, "Delegate"));
  EXPECT_EQ(find(p, "Delegate")->value, Property::value_type(true));
  EXPECT_EQ(find(p, "Slice")->value, Property::value_type(std::string("machine.slice")));
  EXPECT_EQ(find(p, "DefaultDependencies")->value, Property::value_type(false));
  EXPECT_FALSE(find(p, "MemoryMax"));
  EXPECT_FALSE(find(p, "TasksMax"));
}

TEST(SystemdProperties, LimitsOnCgroupV2) {
  oci::Resources r;
  r.memory = oci::MemoryResources{};
  r.memory->limit = 64 << 20;
  r.memory->reservation = 32 << 20;
  r.memory->swap = 128 << 20;
  r.pids_limit = 42;
  r.cpu = oci::CpuResources{};
  r.cpu->shares = 1024;
  r.cpu->quota = 50000;
  r.cpu->period = 100000;
  r.block_io = oci::BlockIoResources{};
  r.block_io->weight = 500;
  auto p = scope_properties("system.slice", "d", true, &r);
  EXPECT_EQ(find(p, "MemoryMax")->value, Property::value_type(uint64_t{64 << 20}));
  EXPECT_EQ(find(p, "MemoryLow")->value, Property::value_type(uint64_t{32 << 20}));
  EXPECT_EQ(find(p, "MemorySwapMax")->value, Property::value_type(uint64_t{64 << 20}));
  EXPECT_EQ(find(p, "TasksMax")->value, Property::value_type(uint64_t{42}));
  EXPECT_EQ(find(p, "CPUWeight")->value, Property::value_type(shares_to_weight(1024)));
  EXPECT_EQ(find(p, "CPUQuotaPerSecUSec")->value, Property::value_type(uint64_t{500000}));
  EXPECT_EQ(find(p, "CPUQuotaPeriodUSec")->value, Property::value_type(uint64_t{100000}));
  EXPECT_EQ(find(p, "IOWeight")->value, Property::value_type(blkio_weight_to_io_weight(500)));
}

TEST(SystemdProperties, UnlimitedAndRounding) {
  oci::Resources r;
  r.memory = oci::MemoryResources{};
  r.memory->limit = -1;
  r.pids_limit = -1;
  r.cpu = oci::CpuResources{};
  r.cpu->quota = 12345;  // 123450 us per second: systemd keeps 1% steps, rounded up
  auto p = scope_properties("system.slice", "d", true, &r);
  EXPECT_EQ(find(p, "MemoryMax")->value, Property::value_type(kInfinity));
  EXPECT_EQ(find(p, "TasksMax")->value, Property::value_type(kInfinity));
  EXPECT_EQ(find(p, "CPUQuotaPerSecUSec")->value, Property::value_type(uint64_t{130000}));
}

TEST(SystemdProperties, ZeroMeansUnset) {
  // docker always sends blockIO.weight 0 and cpu.shares 0 meaning "not set"
  oci::Resources r;
  r.cpu = oci::CpuResources{};
  r.cpu->shares = 0;
  r.block_io = oci::BlockIoResources{};
  r.block_io->weight = 0;
  auto p = scope_properties("system.slice", "d", true, &r);
  EXPECT_FALSE(find(p, "CPUWeight"));
  EXPECT_FALSE(find(p, "IOWeight"));
}

TEST(SystemdProperties, OnlyTasksMaxOnV1AndHybrid) {
  oci::Resources r;
  r.memory = oci::MemoryResources{};
  r.memory->limit = 1 << 20;
  r.pids_limit = 7;
  auto p = scope_properties("system.slice", "d", false, &r);
  EXPECT_FALSE(find(p, "MemoryMax"));
  EXPECT_EQ(find(p, "TasksMax")->value, Property::value_type(uint64_t{7}));
}

TEST(SystemdProperties, BadSwapIsAnError) {
  oci::Resources r;
  r.memory = oci::MemoryResources{};
  r.memory->limit = 64 << 20;
  r.memory->swap = 1 << 20;  // below the memory limit
  EXPECT_THROW(scope_properties("system.slice", "d", true, &r), Error);
}

TEST(SystemdState, SaveLoadRoundTrip) {
  // what a systemd-driven container keeps in its state: the unit, and the cgroupfs view of
  // the scope, which never manages the scope's ancestors
  nlohmann::json saved = {
      {"systemd", {{"unit", "racker-x.scope"}, {"slice", "machine.slice"}, {"v2", true}}},
      {"files",
       {{"layout", "v2"},
        {"hierarchies", nlohmann::json::array()},
        {"manage_ancestors", false},
        {"unified",
         {{"controllers", nlohmann::json::array()},
          {"created", nlohmann::json::array()},
          {"mount", "/sys/fs/cgroup"},
          {"path", "/sys/fs/cgroup/machine.slice/racker-x.scope"}}}}}};
  auto m = CgroupManager::load(saved);
  EXPECT_EQ(m->save(), saved);
  EXPECT_EQ(m->unified_path(), "/sys/fs/cgroup/machine.slice/racker-x.scope");
  saved["systemd"].erase("unit");
  EXPECT_THROW(CgroupManager::load(saved), Error);
}

TEST(LeafOfInit, TheInitsCgroupBelowTheContainers) {
  const std::string c = "/sys/fs/cgroup/machine.slice/racker-x.scope";
  EXPECT_EQ(leaf_of_init(c, "/sys/fs/cgroup", "/", "/machine.slice/racker-x.scope/init.scope"),
            c + "/init.scope");
  // hybrid: the unified mount at /sys/fs/cgroup/unified
  EXPECT_EQ(leaf_of_init("/sys/fs/cgroup/unified/racker/x", "/sys/fs/cgroup/unified", "/",
                         "/racker/x/init.scope"),
            "/sys/fs/cgroup/unified/racker/x/init.scope");
  // a mount of a subtree (racker itself running in a container)
  EXPECT_EQ(leaf_of_init("/sys/fs/cgroup/racker/x", "/sys/fs/cgroup", "/outer",
                         "/outer/racker/x/init.scope"),
            "/sys/fs/cgroup/racker/x/init.scope");
}

TEST(LeafOfInit, NeverOutsideTheContainer) {
  const std::string c = "/sys/fs/cgroup/racker/x";
  EXPECT_FALSE(leaf_of_init(c, "/sys/fs/cgroup", "/", "/racker/x"));
  EXPECT_FALSE(leaf_of_init(c, "/sys/fs/cgroup", "/", "/racker/xy/init.scope"));
  EXPECT_FALSE(leaf_of_init(c, "/sys/fs/cgroup", "/", "/racker/x/../../init.scope"));
  EXPECT_FALSE(leaf_of_init(c, "/sys/fs/cgroup", "/", "/"));
  EXPECT_FALSE(leaf_of_init(c, "/sys/fs/cgroup", "/", ""));
  EXPECT_FALSE(leaf_of_init(c, "/sys/fs/cgroup", "/", "init.scope"));
}

}  // namespace
}  // namespace racker::runtime
