#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <fstream>
#include <iostream>
#include <string>
#include <thread>

#include <gtest/gtest.h>
#include <pthread.h>
#include <atomic>
#include <csignal>

#include "base/error.hpp"
#include "base/fs.hpp"
#include "runtime/cgroups.hpp"
#include "runtime/cgroups_internal.hpp"

namespace racker::runtime {
namespace {

using namespace cgroups_internal;

// --- mountinfo and /proc/self/cgroup -------------------------------------------------------

const char kHybridMountinfo[] =
    "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n"
    "32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n"
    "33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct\n"
    "34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset,clone_children\n"
    "35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n"
    "36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices\n"
    "37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer\n"
    "39 31 0:36 / /sys/fs/cgroup/pids rw,relatime shared:5 - cgroup cgroup rw,pids\n"
    "40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup "
    "rw,xattr,release_agent=/x,name=systemd\n"
    "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n"
    // the memory hierarchy bind-mounted again elsewhere, with a subtree as root
    "90 23 0:32 /sub /srv/my\\040mem rw - cgroup cgroup rw,memory\n";

TEST(CgroupMounts, ParsesHybridHostAndDedupesHierarchies) {
  auto mounts = parse_cgroup_mounts(kHybridMountinfo);
  ASSERT_EQ(mounts.size(), 9u);
  int v2 = 0;
  for (const auto& m : mounts) {
    if (m.v2) {
      ++v2;
      EXPECT_EQ(m.mount_point, "/sys/fs/cgroup/unified");
      EXPECT_TRUE(m.controllers.empty());
    }
    if (m.device == "0:32") {
      EXPECT_EQ(m.mount_point, "/sys/fs/cgroup/memory");  // preferred over the bind mount
      EXPECT_EQ(m.root, "/");
    }
    if (m.device == "0:31") {
      EXPECT_EQ(m.controllers, std::vector<std::string>{"cpuset"});
    }
    if (m.device == "0:37") {
      EXPECT_EQ(m.controllers, std::vector<std::string>{"name=systemd"});
    }
  }
  EXPECT_EQ(v2, 1);
}

TEST(CgroupMounts, CoMountedControllersAndEscapes) {
  auto mounts = parse_cgroup_mounts(
      "25 24 0:22 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid - cgroup cgroup rw,cpu,cpuacct\n"
      "26 24 0:23 / /sys/fs/cgroup/net_cls,net_prio rw - cgroup cgroup rw,net_cls,net_prio\n"
      "27 24 0:24 /x /mnt/a\\040b rw - cgroup cgroup rw,noprefix,blkio\n"
      "28 24 0:25 / /mnt/none rw - cgroup cgroup rw,none\n"
      "29 24 0:26 / /proc rw - proc proc rw\n");
  ASSERT_EQ(mounts.size(), 3u);
  EXPECT_EQ(mounts[0].controllers, (std::vector<std::string>{"cpu", "cpuacct"}));
  EXPECT_EQ(mounts[1].controllers, (std::vector<std::string>{"net_cls", "net_prio"}));
  EXPECT_EQ(mounts[2].mount_point, "/mnt/a b");
  EXPECT_EQ(mounts[2].root, "/x");
  EXPECT_EQ(mounts[2].controllers, std::vector<std::string>{"blkio"});
}

TEST(CgroupMounts, ParsesProcSelfCgroup) {
  auto own = parse_proc_cgroup(
      "9:name=systemd:/user.slice/a\n4:cpu,cpuacct:/c\n0::/init.scope\n2:memory:/with:colon\n");
  EXPECT_EQ(own["name=systemd"], "/user.slice/a");
  EXPECT_EQ(own["cpu"], "/c");
  EXPECT_EQ(own["cpuacct"], "/c");
  EXPECT_EQ(own[""], "/init.scope");
  EXPECT_EQ(own["memory"], "/with:colon");
}

// --- path resolution ------------------------------------------------------------------------

TEST(CgroupPaths, InnerPath) {
  EXPECT_EQ(inner_path("/a/b/../c//d", "id"), "/a/c/d");
  EXPECT_EQ(inner_path("x/y", "id"), "x/y");
  EXPECT_EQ(inner_path("../../etc", "id"), "etc");  // relative paths cannot climb out
  EXPECT_EQ(inner_path("", "ctr1"), "ctr1");        // runc: relative <id>
  EXPECT_EQ(inner_path("system.slice:racker:ctr1", "ctr1"), "/system.slice/racker-ctr1.scope");
  EXPECT_EQ(inner_path(":racker:ctr1", "ctr1"), "/system.slice/racker-ctr1.scope");
  EXPECT_EQ(inner_path("machine-pod.slice:p:n", "n"), "/machine.slice/machine-pod.slice/p-n.scope");
  EXPECT_EQ(inner_path("-.slice::n", "n"), "/n.scope");
  EXPECT_EQ(inner_path("user.slice:x:sub.slice", "n"), "/user.slice/sub.slice");
  EXPECT_EQ(inner_path("/abs:with:colons", "n"), "/abs:with:colons");
}

TEST(CgroupPaths, SystemdSyntaxErrors) {
  EXPECT_THROW(inner_path("nosuffix:p:n", "n"), Error);
  EXPECT_THROW(inner_path("a--b.slice:p:n", "n"), Error);
  EXPECT_THROW(inner_path("system.slice:p:", "n"), Error);
  try {
    expand_slice("-x.slice");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("linux.cgroupsPath"), std::string::npos);
  }
  EXPECT_EQ(expand_slice("a-b-c.slice"), "/a.slice/a-b.slice/a-b-c.slice");
}

std::map<std::string, std::string> host_own() {
  return {{"memory", "/process_api/58fa"},
          {"cpu", "/"},
          {"name=systemd", "/user.slice"},
          {"", "/ctr/runtime"}};
}

const CgroupDir* find(const ResolvedCgroups& r, const std::string& ctrl) {
  for (const auto& d : r.v1)
    if (d.has(ctrl)) return &d;
  return nullptr;
}

TEST(CgroupPaths, ResolveAbsoluteBelowEachRoot) {
  auto r = resolve_cgroup_dirs(CgroupLayout::hybrid, parse_cgroup_mounts(kHybridMountinfo),
                               host_own(), "/racker/c1");
  EXPECT_EQ(r.v1.size(), 8u);
  EXPECT_EQ(find(r, "memory")->path, "/sys/fs/cgroup/memory/racker/c1");
  EXPECT_EQ(find(r, "name=systemd")->path, "/sys/fs/cgroup/systemd/racker/c1");
  ASSERT_TRUE(r.unified);
  EXPECT_EQ(r.unified->path, "/sys/fs/cgroup/unified/racker/c1");
  EXPECT_EQ(r.unified->mount, "/sys/fs/cgroup/unified");
}

TEST(CgroupPaths, ResolveRelativeBelowOwnCgroup) {
  auto r = resolve_cgroup_dirs(CgroupLayout::hybrid, parse_cgroup_mounts(kHybridMountinfo),
                               host_own(), inner_path("", "c1"));
  EXPECT_EQ(find(r, "memory")->path, "/sys/fs/cgroup/memory/process_api/58fa/c1");
  EXPECT_EQ(find(r, "cpu")->path, "/sys/fs/cgroup/cpu/c1");
  EXPECT_EQ(find(r, "name=systemd")->path, "/sys/fs/cgroup/systemd/user.slice/c1");
  EXPECT_EQ(find(r, "pids")->path, "/sys/fs/cgroup/pids/c1");  // no entry: root
  EXPECT_EQ(r.unified->path, "/sys/fs/cgroup/unified/ctr/runtime/c1");
}

TEST(CgroupPaths, ResolveV1OnlyAndCoMounted) {
  auto mounts = parse_cgroup_mounts(
      "25 24 0:22 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n"
      "26 24 0:23 /outer /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n");
  auto r = resolve_cgroup_dirs(CgroupLayout::v1, mounts,
                               {{"cpuacct", "/u"}, {"cpu", "/u"}, {"memory", "/outer/me"}}, "k");
  ASSERT_EQ(r.v1.size(), 2u);
  EXPECT_FALSE(r.unified);
  EXPECT_EQ(r.v1[0].path, "/sys/fs/cgroup/cpu,cpuacct/u/k");
  EXPECT_TRUE(r.v1[0].has("cpuacct"));
  // the mount shows the subtree /outer, so the own path is taken relative to it
  EXPECT_EQ(r.v1[1].path, "/sys/fs/cgroup/memory/me/k");
}

TEST(CgroupPaths, ResolveV2RelativeUsesParentOfOwnCgroup) {
  auto mounts = parse_cgroup_mounts("30 24 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n");
  auto r = resolve_cgroup_dirs(CgroupLayout::v2, mounts, {{"", "/user.slice/session-1.scope"}},
                               inner_path("", "c1"));
  EXPECT_TRUE(r.v1.empty());
  EXPECT_EQ(r.unified->path, "/sys/fs/cgroup/user.slice/c1");
  r = resolve_cgroup_dirs(CgroupLayout::v2, mounts, {{"", "/"}}, "/a/b");
  EXPECT_EQ(r.unified->path, "/sys/fs/cgroup/a/b");
  EXPECT_THROW(resolve_cgroup_dirs(CgroupLayout::v2, {}, {}, "/a"), Error);
}

// --- conversions ----------------------------------------------------------------------------

TEST(CgroupValues, SharesToWeight) {
  EXPECT_EQ(shares_to_weight(0), 0u);
  EXPECT_EQ(shares_to_weight(2), 1u);
  EXPECT_EQ(shares_to_weight(1024), 39u);
  EXPECT_EQ(shares_to_weight(512), 20u);
  EXPECT_EQ(shares_to_weight(262144), 10000u);
  EXPECT_EQ(blkio_weight_to_io_weight(10), 1u);
  EXPECT_EQ(blkio_weight_to_io_weight(1000), 10000u);
  EXPECT_EQ(blkio_weight_to_io_weight(500), 4950u);
}

TEST(CgroupValues, SwapToV2) {
  EXPECT_EQ(swap_to_v2(0, -1), -1);  // unlimited memory, swap unset: both unlimited
  EXPECT_EQ(swap_to_v2(-1, 100), -1);
  EXPECT_EQ(swap_to_v2(0, 100), 0);
  EXPECT_EQ(swap_to_v2(300, 100), 200);
  EXPECT_EQ(swap_to_v2(100, 100), 0);
  EXPECT_THROW(swap_to_v2(50, 100), Error);
  EXPECT_THROW(swap_to_v2(300, 0), Error);
  EXPECT_THROW(swap_to_v2(300, -1), Error);
}

TEST(CgroupValues, CpuMax) {
  EXPECT_EQ(cpu_max_value(50000, 100000, ""), "50000 100000");
  EXPECT_EQ(cpu_max_value(-1, std::nullopt, "20000 50000\n"), "max 50000");
  EXPECT_EQ(cpu_max_value(std::nullopt, 250000, "20000 50000\n"), "20000 250000");
  EXPECT_EQ(cpu_max_value(30000, std::nullopt, ""), "30000 100000");
}

TEST(CgroupValues, HugepageNames) {
  EXPECT_EQ(hugepage_name(2048), "2MB");
  EXPECT_EQ(hugepage_name(1048576), "1GB");
  EXPECT_EQ(hugepage_name(64), "64KB");
  EXPECT_EQ(hugepage_name(32768), "32MB");
  char tmpl[] = "/tmp/racker-hp-XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  std::string dir = tmpl;
  mkdir_p(dir + "/hugepages-2048kB");
  mkdir_p(dir + "/hugepages-1048576kB");
  mkdir_p(dir + "/unrelated");
  EXPECT_EQ(host_hugepage_names(dir), (std::vector<std::string>{"1GB", "2MB"}));
  remove_tree(dir);
}

// --- devices --------------------------------------------------------------------------------

oci::DeviceRule rule(bool allow, char type, std::optional<int64_t> major,
                     std::optional<int64_t> minor, const char* access) {
  return oci::DeviceRule{
      .allow = allow, .type = type, .major = major, .minor = minor, .access = access};
}

TEST(CgroupDevices, V1Lines) {
  EXPECT_EQ(device_rule_line(rule(true, 'c', 1, 3, "rwm")), "c 1:3 rwm");
  EXPECT_EQ(device_rule_line(rule(true, 'c', 136, std::nullopt, "rwm")), "c 136:* rwm");
  EXPECT_EQ(device_rule_line(rule(false, 'b', 8, 0, "r")), "b 8:0 r");
  EXPECT_EQ(device_rule_line(rule(false, 'a', std::nullopt, std::nullopt, "rwm")), "a *:* rwm");
  EXPECT_EQ(device_rule_line(rule(true, 'a', 5, 5, "")), "a *:* rwm");
  EXPECT_EQ(device_rule_line(rule(true, 'b', std::nullopt, -1, "m")), "b *:* m");
}

TEST(CgroupDevices, DefaultsAndLinuxDevices) {
  std::vector<std::string> lines;
  for (const auto& r : default_device_rules()) lines.push_back(device_rule_line(r));
  for (const char* want : {"c *:* m", "b *:* m", "c 1:3 rwm", "c 1:5 rwm", "c 1:7 rwm", "c 5:0 rwm",
                           "c 1:8 rwm", "c 1:9 rwm", "c 5:1 rwm", "c 5:2 rwm", "c 136:* rwm"})
    EXPECT_NE(std::find(lines.begin(), lines.end(), want), lines.end()) << want;
  std::vector<oci::Device> devs(3);
  devs[0].type = 'b', devs[0].major = 8, devs[0].minor = 0;
  devs[1].type = 'u', devs[1].major = 4, devs[1].minor = 2;
  devs[2].type = 'p';
  auto rules = device_rules_for(devs);
  ASSERT_EQ(rules.size(), 2u);
  EXPECT_EQ(device_rule_line(rules[0]), "b 8:0 rwm");
  EXPECT_EQ(device_rule_line(rules[1]), "c 4:2 rwm");
}

// A tiny interpreter for the instructions device_filter_program emits, so its semantics can
// be checked without loading it.
int run_filter(const std::vector<bpf_insn>& prog, char type, uint32_t access, uint32_t major,
               uint32_t minor) {
  const uint32_t ctx[3] = {(access << 16) | (type == 'b' ? 1u : 2u), major, minor};
  uint64_t r[11] = {};
  for (size_t pc = 0; pc < prog.size(); ++pc) {
    const bpf_insn& i = prog[pc];
    const uint32_t imm = static_cast<uint32_t>(i.imm);
    switch (i.code) {
      case BPF_LDX | BPF_MEM | BPF_W:
        if (i.src_reg != 1 || i.off % 4 != 0 || i.off > 8) return -1;
        r[i.dst_reg] = ctx[i.off / 4];
        break;
      case BPF_ALU | BPF_AND | BPF_K:
        r[i.dst_reg] = static_cast<uint32_t>(r[i.dst_reg]) & imm;
        break;
      case BPF_ALU | BPF_RSH | BPF_K:
        r[i.dst_reg] = static_cast<uint32_t>(r[i.dst_reg]) >> imm;
        break;
      case BPF_ALU | BPF_MOV | BPF_X:
        r[i.dst_reg] = static_cast<uint32_t>(r[i.src_reg]);
        break;
      case BPF_ALU64 | BPF_MOV | BPF_K:
        r[i.dst_reg] = static_cast<uint64_t>(static_cast<int64_t>(i.imm));
        break;
      case BPF_JMP32 | BPF_JNE | BPF_K:
        if (static_cast<uint32_t>(r[i.dst_reg]) != imm) pc += i.off;
        break;
      case BPF_JMP32 | BPF_JEQ | BPF_K:
        if (static_cast<uint32_t>(r[i.dst_reg]) == imm) pc += i.off;
        break;
      case BPF_JMP | BPF_EXIT:
        return static_cast<int>(r[0]);
      default:
        return -2;
    }
  }
  return -3;
}

constexpr uint32_t R = BPF_DEVCG_ACC_READ, W = BPF_DEVCG_ACC_WRITE, M = BPF_DEVCG_ACC_MKNOD;

TEST(CgroupDevices, EbpfProgramSemantics) {
  std::vector<oci::DeviceRule> rules = {rule(false, 'a', std::nullopt, std::nullopt, "rwm"),
                                        rule(true, 'b', 8, 0, "r")};
  rules.insert(rules.end(), default_device_rules().begin(), default_device_rules().end());
  rules.push_back(rule(false, 'c', 1, 9, "w"));  // urandom becomes read-only
  auto prog = device_filter_program(rules);
  EXPECT_EQ(run_filter(prog, 'c', R | W, 1, 3), 1);  // /dev/null
  EXPECT_EQ(run_filter(prog, 'c', R, 136, 7), 1);    // a pty
  EXPECT_EQ(run_filter(prog, 'c', M, 10, 200), 1);   // mknod anything
  EXPECT_EQ(run_filter(prog, 'c', R, 10, 200), 0);   // but not open it
  EXPECT_EQ(run_filter(prog, 'b', R, 8, 0), 1);
  EXPECT_EQ(run_filter(prog, 'b', R | W, 8, 0), 0);  // only read was allowed
  EXPECT_EQ(run_filter(prog, 'b', R, 8, 1), 0);
  EXPECT_EQ(run_filter(prog, 'c', R, 1, 9), 1);
  EXPECT_EQ(run_filter(prog, 'c', R | W, 1, 9), 0);  // the later deny wins
  EXPECT_EQ(run_filter(prog, 'c', R, 4, 1), 0);      // default deny

  // An allow-all rule at the end short-circuits everything before it.
  rules.push_back(rule(true, 'a', std::nullopt, std::nullopt, "rwm"));
  auto all = device_filter_program(rules);
  EXPECT_LT(all.size(), prog.size());
  EXPECT_EQ(run_filter(all, 'b', R | W, 8, 1), 1);
  EXPECT_EQ(run_filter(device_filter_program({}), 'c', R, 1, 3), 0);
}

// --- state ----------------------------------------------------------------------------------

TEST(CgroupState, SaveLoadRoundTrip) {
  nlohmann::json saved = {
      {"layout", "hybrid"},
      {"hierarchies",
       {{{"controllers", {"memory"}},
         {"mount", "/sys/fs/cgroup/memory"},
         {"path", "/sys/fs/cgroup/memory/a/b"},
         {"created", {"/sys/fs/cgroup/memory/a/b"}}},
        {{"controllers", {"cpu", "cpuacct"}},
         {"mount", "/sys/fs/cgroup/cpu,cpuacct"},
         {"path", "/sys/fs/cgroup/cpu,cpuacct/a/b"},
         {"created", nlohmann::json::array()}}}},
      {"unified",
       {{"controllers", nlohmann::json::array()},
        {"mount", "/sys/fs/cgroup/unified"},
        {"path", "/sys/fs/cgroup/unified/a/b"},
        {"created", {"/sys/fs/cgroup/unified/a", "/sys/fs/cgroup/unified/a/b"}}}}};
  auto m = CgroupManager::load(saved);
  EXPECT_EQ(m->save(), saved);
  EXPECT_EQ(m->unified_path(), "/sys/fs/cgroup/unified/a/b");
  EXPECT_EQ(CgroupManager::load(m->save())->save(), saved);

  nlohmann::json v1 = {
      {"layout", "v1"}, {"hierarchies", saved["hierarchies"]}, {"unified", nullptr}};
  EXPECT_EQ(CgroupManager::load(v1)->save(), v1);
  EXPECT_EQ(CgroupManager::load(v1)->unified_path(), "");
}

TEST(CgroupState, RejectsTamperedState) {
  auto dir = [](const char* mount, const char* path, std::vector<std::string> created) {
    return nlohmann::json{{"mount", mount}, {"path", path}, {"created", created}};
  };
  auto state = [](nlohmann::json d) {
    return nlohmann::json{
        {"layout", "v2"}, {"hierarchies", nlohmann::json::array()}, {"unified", d}};
  };
  EXPECT_NO_THROW(CgroupManager::load(state(dir("/sys/fs/cgroup", "/sys/fs/cgroup/x", {}))));
  EXPECT_THROW(CgroupManager::load(state(dir("/sys/fs/cgroup", "/etc", {}))), Error);
  EXPECT_THROW(CgroupManager::load(state(dir("/sys/fs/cgroup", "/sys/fs/cgroup/x", {"/etc"}))),
               Error);
  EXPECT_THROW(
      CgroupManager::load(state(dir("/sys/fs/cgroup", "/sys/fs/cgroup/x", {"/sys/fs/cgroup"}))),
      Error);
  EXPECT_THROW(CgroupManager::load({{"layout", "v3"}}), Error);
  EXPECT_THROW(CgroupManager::load({{"layout", "v2"}}), Error);  // v2 needs a unified dir
}

std::string slurp(const std::string& path) {
  auto s = read_file_if_exists(path);
  return s ? *s : "";
}

std::string first_line(const std::string& path) {
  std::string s = slurp(path);
  return s.substr(0, s.find('\n'));
}

// --- writers, on fake cgroup trees in /tmp ---------------------------------------------------

// A temporary directory with empty "knob" files, standing in for a cgroup.
struct FakeTree {
  std::string root;
  FakeTree() {
    char tmpl[] = "/tmp/racker-cg-XXXXXX";
    if (::mkdtemp(tmpl)) root = tmpl;
  }
  ~FakeTree() { remove_tree(root); }
  std::string dir(const std::string& rel, std::initializer_list<const char*> files) const {
    std::string d = root + "/" + rel;
    mkdir_p(d);
    for (const char* f : files) std::ofstream(d + "/" + f).flush();
    return d;
  }
};

nlohmann::json fake_dir(const std::string& mount, const std::string& path,
                        std::vector<std::string> controllers = {}) {
  return {{"controllers", controllers},
          {"mount", mount},
          {"path", path},
          {"created", nlohmann::json::array()}};
}

TEST(CgroupWriters, V2ResourcesLandInTheirFiles) {
  FakeTree t;
  t.dir("", {"cgroup.controllers"});
  std::ofstream(t.root + "/cgroup.controllers") << "cpu memory pids io hugetlb\n";
  std::string d = t.dir(
      "ctr", {"memory.max", "memory.swap.max", "memory.low", "cpu.weight", "cpu.max", "pids.max",
              "io.weight", "io.max", "hugetlb.2MB.max", "memory.high", "cpuset.cpus"});
  std::ofstream(d + "/cpu.max") << "max 100000\n";
  auto mgr = CgroupManager::load({{"layout", "v2"},
                                  {"hierarchies", nlohmann::json::array()},
                                  {"unified", fake_dir(t.root, d)}});
  oci::Resources res;
  auto& mem = res.memory.emplace();
  mem.limit = 100 << 20;
  mem.swap = 300 << 20;
  mem.reservation = 50 << 20;
  mem.swappiness = 10;  // no v2 equivalent: ignored
  auto& cpu = res.cpu.emplace();
  cpu.shares = 1024;
  cpu.quota = 50000;
  cpu.cpus = "0";
  res.pids_limit = -1;
  auto& io = res.block_io.emplace();
  io.weight = 500;
  io.throttle_read_bps.push_back({.major = 8, .minor = 0, .rate = 1000});
  res.hugepage_limits = {{.page_size = "2MB", .limit = 4 << 20}};
  res.unified = {{"memory.high", "200000000"}};
  EXPECT_NO_THROW(mgr->update(res));
  EXPECT_EQ(first_line(d + "/memory.max"), "104857600");
  EXPECT_EQ(first_line(d + "/memory.swap.max"), "209715200");
  EXPECT_EQ(first_line(d + "/memory.low"), "52428800");
  EXPECT_EQ(first_line(d + "/cpu.weight"), "39");
  EXPECT_EQ(first_line(d + "/cpu.max"), "50000 100000");
  EXPECT_EQ(first_line(d + "/cpuset.cpus"), "0");
  EXPECT_EQ(first_line(d + "/pids.max"), "max");
  EXPECT_EQ(first_line(d + "/io.weight"), "4950");
  EXPECT_EQ(first_line(d + "/io.max"), "8:0 rbps=1000");
  EXPECT_EQ(first_line(d + "/hugetlb.2MB.max"), "4194304");
  EXPECT_EQ(first_line(d + "/memory.high"), "200000000");

  oci::Resources bad;
  bad.cpu.emplace().realtime_runtime = 1000;
  EXPECT_THROW(mgr->validate(bad), Error);
  oci::Resources no_cpuset;
  no_cpuset.cpu.emplace().mems = "0";
  try {
    mgr->validate(no_cpuset);
    ADD_FAILURE() << "cpuset accepted without the controller";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("linux.resources.cpu.cpus"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("\"cpuset\""), std::string::npos) << e.what();
  }
  oci::Resources net;
  net.network.emplace().class_id = 1;
  EXPECT_THROW(mgr->validate(net), Error);
}

TEST(CgroupWriters, V1ResourcesAndErrorsNamingFieldAndFile) {
  FakeTree t;
  std::string mem = t.dir(
      "memory/ctr", {"memory.limit_in_bytes", "memory.memsw.limit_in_bytes",
                     "memory.soft_limit_in_bytes", "memory.swappiness", "memory.oom_control"});
  std::ofstream(mem + "/memory.limit_in_bytes") << "33554432\n";  // below the new swap
  std::string cpu =
      t.dir("cpu,cpuacct/ctr", {"cpu.shares", "cpu.cfs_quota_us", "cpu.cfs_period_us"});
  std::string blkio = t.dir("blkio/ctr", {"blkio.throttle.read_bps_device"});
  std::string pids = t.dir("pids/ctr", {});  // no pids.max: writes must fail loudly
  auto mgr = CgroupManager::load({{"layout", "v1"},
                                  {"hierarchies",
                                   {fake_dir(t.root + "/memory", mem, {"memory"}),
                                    fake_dir(t.root + "/cpu,cpuacct", cpu, {"cpu", "cpuacct"}),
                                    fake_dir(t.root + "/blkio", blkio, {"blkio"}),
                                    fake_dir(t.root + "/pids", pids, {"pids"})}},
                                  {"unified", nullptr}});
  oci::Resources res;
  auto& m = res.memory.emplace();
  m.limit = 64 << 20;
  m.swap = 128 << 20;
  m.swappiness = 0;
  m.disable_oom_killer = true;
  auto& c = res.cpu.emplace();
  c.quota = 20000;
  c.period = 100000;
  res.block_io.emplace().throttle_read_bps.push_back({.major = 8, .minor = 16, .rate = 5});
  EXPECT_NO_THROW(mgr->update(res));
  EXPECT_EQ(first_line(mem + "/memory.limit_in_bytes"), "67108864");
  EXPECT_EQ(first_line(mem + "/memory.memsw.limit_in_bytes"), "134217728");
  EXPECT_EQ(first_line(mem + "/memory.swappiness"), "0");
  EXPECT_EQ(first_line(mem + "/memory.oom_control"), "1");
  EXPECT_EQ(first_line(cpu + "/cpu.cfs_quota_us"), "20000");
  EXPECT_EQ(first_line(cpu + "/cpu.cfs_period_us"), "100000");
  EXPECT_EQ(first_line(blkio + "/blkio.throttle.read_bps_device"), "8:16 5");

  oci::Resources p;
  p.pids_limit = 5;
  try {
    mgr->update(p);
    ADD_FAILURE() << "missing pids.max not reported";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()),
              "linux.resources.pids.limit: write " + pids + "/pids.max: no such file or directory");
    EXPECT_EQ(e.err(), ENOENT);
  }
  oci::Resources w;
  w.block_io.emplace().weight = 300;
  try {
    mgr->update(w);
    ADD_FAILURE() << "missing blkio.weight not reported";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("linux.resources.blockIO.weight: "), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("blkio.bfq.weight"), std::string::npos) << e.what();
  }
  oci::Resources hp;
  hp.hugepage_limits = {{.page_size = "2MB", .limit = 0}};
  EXPECT_THROW(mgr->update(hp), Error);  // no hugetlb hierarchy
  oci::Resources uni;
  uni.unified = {{"memory.high", "1"}};
  EXPECT_THROW(mgr->validate(uni), Error);  // needs cgroup v2
}

// --- on the host ----------------------------------------------------------------------------

std::string unique_name(const char* what) {
  static int counter = 0;
  return std::string("/racker-unit-") + what + "-" + std::to_string(::getpid()) + "-" +
         std::to_string(++counter);
}

// A child that sleeps until killed; reaped by the destructor.
struct SleepingChild {
  pid_t pid = -1;
  SleepingChild() {
    pid = ::fork();
    if (pid == 0) {
      for (;;) ::pause();
    }
  }
  void kill_and_reap() {
    if (pid <= 0) return;
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
    pid = -1;
  }
  ~SleepingChild() { kill_and_reap(); }
};

// Skips unless root on a v1 or hybrid host with the controllers the test needs.
bool skip_unless_v1_host(std::string& why, std::initializer_list<const char*> ctrls) {
  if (::geteuid() != 0) {
    why = "needs root";
    return true;
  }
  if (detect_cgroup_layout() == CgroupLayout::v2) {
    why = "needs cgroup v1 controllers (this host is pure cgroup v2)";
    return true;
  }
  auto mounts = parse_cgroup_mounts(slurp("/proc/self/mountinfo"));
  for (const char* c : ctrls) {
    bool found = false;
    for (const auto& m : mounts)
      found =
          found || std::find(m.controllers.begin(), m.controllers.end(), c) != m.controllers.end();
    if (!found) {
      why = std::string("no v1 ") + c + " hierarchy on this host";
      return true;
    }
  }
  return false;
}

TEST(CgroupHost, DetectsLayout) {
  if (!path_exists("/sys/fs/cgroup")) GTEST_SKIP() << "no /sys/fs/cgroup";
  auto layout = detect_cgroup_layout();
  bool unified_mounted = slurp("/proc/self/mountinfo").find(" - cgroup2 ") != std::string::npos;
  if (layout == CgroupLayout::v1) {
    EXPECT_FALSE(path_exists("/sys/fs/cgroup/cgroup.controllers"));
  } else {
    EXPECT_TRUE(unified_mounted);
  }
  EXPECT_EQ(detect_cgroup_layout("/nonexistent"), CgroupLayout::v1);
}

TEST(CgroupHost, V1LifecycleWithLimitsFreezeAndDestroy) {
  std::string why;
  if (skip_unless_v1_host(why, {"memory", "pids", "cpu", "freezer", "devices", "cpuset"}))
    GTEST_SKIP() << why;
  const std::string path = unique_name("life") + "/ctr";
  auto mgr = CgroupManager::create(path, "ignored");
  nlohmann::json saved = mgr->save();

  oci::Resources res;
  res.memory.emplace().limit = 64 << 20;
  res.pids_limit = 10;
  res.cpu.emplace().shares = 512;
  res.devices = {rule(false, 'a', std::nullopt, std::nullopt, "rwm")};
  ASSERT_NO_THROW(mgr->validate(res));

  SleepingChild child;
  ASSERT_GT(child.pid, 0);
  try {
    mgr->apply(child.pid, &res);
  } catch (const Error& e) {
    mgr->destroy();
    FAIL() << e.what();
  }
  saved = mgr->save();
  std::vector<std::string> dirs, created;
  for (const auto& h : saved["hierarchies"]) {
    dirs.push_back(h["path"]);
    for (const auto& c : h["created"]) created.push_back(c);
  }
  if (!saved["unified"].is_null()) {
    dirs.push_back(saved["unified"]["path"]);
    for (const auto& c : saved["unified"]["created"]) created.push_back(c);
    EXPECT_EQ(mgr->unified_path(), saved["unified"]["path"].get<std::string>());
  }
  for (const auto& d : dirs) {
    EXPECT_TRUE(path_exists(d)) << d;
    EXPECT_NE(slurp(d + "/cgroup.procs").find(std::to_string(child.pid)), std::string::npos) << d;
  }
  EXPECT_EQ(created.size(), 2 * dirs.size());  // the parent and the leaf everywhere

  // read the limits back through a manager rebuilt from the saved state
  auto loaded = CgroupManager::load(saved);
  EXPECT_EQ(first_line("/sys/fs/cgroup/memory" + path + "/memory.limit_in_bytes"), "67108864");
  EXPECT_EQ(first_line("/sys/fs/cgroup/pids" + path + "/pids.max"), "10");
  std::string cpu_dir;
  for (const auto& h : saved["hierarchies"])
    for (const auto& c : h["controllers"])
      if (c == "cpu") cpu_dir = h["path"];
  EXPECT_EQ(first_line(cpu_dir + "/cpu.shares"), "512");
  std::string devices = slurp("/sys/fs/cgroup/devices" + path + "/devices.list");
  EXPECT_NE(devices.find("c 1:3 rwm"), std::string::npos) << devices;
  EXPECT_EQ(devices.find("a *:* rwm"), std::string::npos) << devices;
  EXPECT_FALSE(first_line("/sys/fs/cgroup/cpuset" + path + "/cpuset.cpus").empty());

  auto pids = loaded->pids();
  EXPECT_NE(std::find(pids.begin(), pids.end(), child.pid), pids.end());

  // update: raise memory, lower pids
  oci::Resources more;
  more.memory.emplace().limit = 128 << 20;
  more.pids_limit = 0;
  ASSERT_NO_THROW(loaded->update(more));
  EXPECT_EQ(first_line("/sys/fs/cgroup/memory" + path + "/memory.limit_in_bytes"), "134217728");
  EXPECT_EQ(first_line("/sys/fs/cgroup/pids" + path + "/pids.max"), "max");

  EXPECT_FALSE(loaded->frozen());
  ASSERT_NO_THROW(loaded->freeze());
  EXPECT_TRUE(loaded->frozen());
  ASSERT_NO_THROW(loaded->thaw());
  EXPECT_FALSE(loaded->frozen());

  child.kill_and_reap();
  loaded->destroy();
  for (const auto& d : created) EXPECT_FALSE(path_exists(d)) << d;
  EXPECT_TRUE(path_exists("/sys/fs/cgroup/memory"));
}

TEST(CgroupHost, DestroyKeepsPreexistingParentAndKillsLeftovers) {
  std::string why;
  if (skip_unless_v1_host(why, {"memory", "pids"})) GTEST_SKIP() << why;
  const std::string parent = unique_name("keep");
  const std::string pre = "/sys/fs/cgroup/memory" + parent;
  ASSERT_EQ(::mkdir(pre.c_str(), 0755), 0);
  auto mgr = CgroupManager::create(parent + "/ctr", "x");
  SleepingChild child;
  try {
    mgr->apply(child.pid, nullptr);
  } catch (const Error& e) {
    mgr->destroy();
    ::rmdir(pre.c_str());
    FAIL() << e.what();
  }
  // destroy() kills what is still inside a cgroup it created
  mgr->destroy();
  int status = 0;
  EXPECT_EQ(::waitpid(child.pid, &status, 0), child.pid);
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
  child.pid = -1;
  mgr->destroy();  // the zombie is reaped now; a second call finishes the job
  EXPECT_FALSE(path_exists(pre + "/ctr"));
  EXPECT_TRUE(path_exists(pre));  // not ours: it stays
  EXPECT_FALSE(path_exists("/sys/fs/cgroup/pids" + parent));
  EXPECT_EQ(::rmdir(pre.c_str()), 0);
}

TEST(CgroupHost, ValidateNamesTheField) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root";
  auto mgr = CgroupManager::create(unique_name("validate"), "x");
  oci::Resources res;
  res.hugepage_limits = {{.page_size = "3MB", .limit = 1 << 20}};
  try {
    mgr->validate(res);
    ADD_FAILURE() << "3MB huge pages accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("linux.resources.hugepageLimits"), std::string::npos)
        << e.what();
  }
  oci::Resources keys;
  keys.unified = {{"../escape", "1"}};
  EXPECT_THROW(mgr->validate(keys), Error);
  oci::Resources hp;
  auto names = host_hugepage_names();
  if (!names.empty()) {
    hp.hugepage_limits = {{.page_size = names[0], .limit = 0}};
    // valid wherever a hugetlb controller exists (v1, or cgroup2 as on the hybrid test host)
    auto mounts = parse_cgroup_mounts(slurp("/proc/self/mountinfo"));
    bool hugetlb =
        slurp("/sys/fs/cgroup/unified/cgroup.controllers").find("hugetlb") != std::string::npos ||
        slurp("/sys/fs/cgroup/cgroup.controllers").find("hugetlb") != std::string::npos;
    for (const auto& m : mounts)
      hugetlb = hugetlb || std::find(m.controllers.begin(), m.controllers.end(), "hugetlb") !=
                               m.controllers.end();
    if (hugetlb) {
      EXPECT_NO_THROW(mgr->validate(hp));
    }
  }
  mgr->destroy();  // nothing was created
}

TEST(CgroupHost, HybridHugetlbGoesToUnified) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root";
  if (detect_cgroup_layout() != CgroupLayout::hybrid) GTEST_SKIP() << "host is not hybrid";
  if (slurp("/sys/fs/cgroup/unified/cgroup.controllers").find("hugetlb") == std::string::npos)
    GTEST_SKIP() << "no hugetlb in the unified hierarchy";
  auto names = host_hugepage_names();
  if (names.empty()) GTEST_SKIP() << "no huge page sizes";
  auto mgr = CgroupManager::create(unique_name("hugetlb"), "x");
  if (mgr->save()["hierarchies"].dump().find("\"hugetlb\"") != std::string::npos)
    GTEST_SKIP() << "v1 hugetlb hierarchy present: hugepageLimits go there";
  const bool enabled_before =
      slurp("/sys/fs/cgroup/unified/cgroup.subtree_control").find("hugetlb") != std::string::npos;
  oci::Resources res;
  // the kernel rounds limits down to whole pages: 2 GiB is whole for every common size
  const uint64_t limit = uint64_t{2} << 30;
  res.hugepage_limits = {{.page_size = names[0], .limit = limit}};
  ASSERT_NO_THROW(mgr->validate(res));
  SleepingChild child;
  try {
    mgr->apply(child.pid, &res);
    EXPECT_EQ(first_line(mgr->unified_path() + "/hugetlb." + names[0] + ".max"),
              std::to_string(limit));
  } catch (const Error& e) {
    ADD_FAILURE() << e.what();
  }
  child.kill_and_reap();
  mgr->destroy();
  EXPECT_FALSE(path_exists(mgr->unified_path()));
  if (!enabled_before) {  // leave the host as it was
    try {
      write_file("/sys/fs/cgroup/unified/cgroup.subtree_control", "-hugetlb");
    } catch (const Error& e) {
      std::cerr << "note: could not disable hugetlb again: " << e.what() << "\n";
    }
  }
}

// Where cgroup2 is mounted here ("" if nowhere).
std::string cgroup2_mount() {
  std::string mount;
  for (const auto& m : parse_cgroup_mounts(slurp("/proc/self/mountinfo")))
    if (m.v2) mount = m.mount_point;
  return mount;
}

// A signal caught while the kernel verifies the program makes BPF_PROG_LOAD fail with EAGAIN
// (racker has handlers for SIGINT/SIGTERM during a boot): the load is tried again.
TEST(CgroupHost, EbpfDeviceFilterLoadSurvivesSignals) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root";
  std::string mount = cgroup2_mount();
  if (mount.empty()) GTEST_SKIP() << "no cgroup2 mount";
  const std::string dir = mount + unique_name("bpfsig");
  ASSERT_EQ(::mkdir(dir.c_str(), 0755), 0) << dir;
  struct sigaction sa = {}, old = {};
  sa.sa_handler = [](int) {};
  ::sigaction(SIGUSR1, &sa, &old);
  pthread_t self = ::pthread_self();
  std::atomic<bool> stop{false};
  std::thread pester([&] {
    while (!stop) {
      ::pthread_kill(self, SIGUSR1);
      std::this_thread::sleep_for(std::chrono::microseconds(1000));
    }
  });
  std::string failure;
  std::vector<oci::DeviceRule> rules;
  for (int i = 0; i < 10; ++i) rules.push_back(rule(true, 'c', 1, i, "rw"));
  for (int i = 0; i < 1000 && failure.empty(); ++i) {
    try {
      attach_device_filter(dir, rules);
    } catch (const Error& e) {
      failure = e.what();
      if (e.err() == EPERM || e.err() == ENOSYS) failure.clear(), i = 1000;
    }
  }
  stop = true;
  pester.join();
  ::sigaction(SIGUSR1, &old, nullptr);
  ::rmdir(dir.c_str());
  EXPECT_EQ(failure, "");
}

TEST(CgroupHost, EbpfDeviceFilterIsEnforced) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root";
  std::string mount = cgroup2_mount();
  if (mount.empty()) GTEST_SKIP() << "no cgroup2 mount";
  const std::string dir = mount + unique_name("bpf");
  ASSERT_EQ(::mkdir(dir.c_str(), 0755), 0) << dir;
  try {
    // allow /dev/null; a second attach replaces the first filter instead of stacking
    attach_device_filter(dir, {rule(true, 'c', 1, 5, "r")});
    attach_device_filter(dir, {rule(true, 'c', 1, 3, "rw")});
  } catch (const Error& e) {
    ::rmdir(dir.c_str());
    if (e.err() == EPERM || e.err() == ENOSYS) GTEST_SKIP() << "bpf not permitted: " << e.what();
    FAIL() << e.what();
  }
  pid_t pid = ::fork();
  if (pid == 0) {
    int fd = ::open((dir + "/cgroup.procs").c_str(), O_WRONLY);
    if (fd < 0 || ::write(fd, "0", 1) != 1) _exit(10);
    ::close(fd);
    int null_fd = ::open("/dev/null", O_RDWR);
    if (null_fd < 0) _exit(11);
    int zero_fd = ::open("/dev/zero", O_RDONLY);
    if (zero_fd >= 0) _exit(12);
    _exit(errno == EPERM ? 0 : 13);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  EXPECT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << "10: join, 11: /dev/null denied, 12: /dev/zero allowed";
  for (int i = 0; i < 100 && ::rmdir(dir.c_str()) != 0 && errno == EBUSY; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_FALSE(path_exists(dir));
}

}  // namespace
}  // namespace racker::runtime
