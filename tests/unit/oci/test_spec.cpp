#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "base/error.hpp"
#include "oci/capabilities.hpp"
#include "oci/spec.hpp"

using namespace racker;
using nlohmann::json;

namespace {

json minimal() {
  return {{"ociVersion", "1.0.2"},
          {"root", {{"path", "rootfs"}}},
          {"process", {{"args", {"/bin/true"}}, {"cwd", "/"}}}};
}

std::string error_of(const json& j) {
  try {
    oci::parse_spec(j.dump());
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

}  // namespace

TEST(ParseSpec, Minimal) {
  auto s = oci::parse_spec(minimal().dump());
  EXPECT_EQ(s.root.path, "rootfs");
  ASSERT_TRUE(s.process);
  EXPECT_EQ(s.process->args, std::vector<std::string>{"/bin/true"});
  EXPECT_FALSE(s.linux_);
}

TEST(ParseSpec, ExampleSpecRoundTrips) {
  auto s = oci::parse_spec(oci::example_spec(false).dump());
  ASSERT_TRUE(s.linux_);
  EXPECT_TRUE(s.linux_->find_namespace("pid"));
  EXPECT_EQ(s.mounts.size(), 7u);
  auto r = oci::parse_spec(oci::example_spec(true).dump());
  EXPECT_TRUE(r.linux_->find_namespace("user"));
  EXPECT_EQ(r.linux_->uid_mappings.size(), 1u);
}

TEST(ParseSpec, FullProcess) {
  json j = minimal();
  j["process"]["user"] = {{"uid", 1000}, {"gid", 100}, {"umask", 18}, {"additionalGids", {5, 6}}};
  j["process"]["capabilities"] = {{"bounding", {"CAP_CHOWN", "CAP_KILL"}},
                                  {"effective", json::array()}};
  j["process"]["rlimits"] = {{{"type", "RLIMIT_NOFILE"}, {"soft", 512}, {"hard", 1024}}};
  j["process"]["oomScoreAdj"] = -500;
  j["process"]["env"] = {"A=1", "PATH=/bin"};
  auto p = *oci::parse_spec(j.dump()).process;
  EXPECT_EQ(p.user.uid, 1000u);
  EXPECT_EQ(p.user.umask, 18u);
  EXPECT_EQ(p.user.additional_gids, (std::vector<uint32_t>{5, 6}));
  EXPECT_EQ(*p.capabilities->bounding, (std::vector<int>{0, 5}));
  EXPECT_TRUE(p.capabilities->effective->empty());
  // a set the object leaves out is the empty set (docker's --cap-drop ALL sends {})
  ASSERT_TRUE(p.capabilities->ambient);
  EXPECT_TRUE(p.capabilities->ambient->empty());
  ASSERT_EQ(p.rlimits.size(), 1u);
  EXPECT_EQ(p.rlimits[0].soft, 512u);
  EXPECT_EQ(p.oom_score_adj, -500);
}

TEST(ParseSpec, LinuxSection) {
  json j = minimal();
  j["linux"] = {
      {"namespaces", {{{"type", "pid"}}, {{"type", "network"}, {"path", "/proc/1/ns/net"}}}},
      {"uidMappings", {{{"containerID", 0}, {"hostID", 1000}, {"size", 10}}}},
      {"resources", {{"memory", {{"limit", 1048576}}}, {"pids", {{"limit", 5}}}}},
      {"seccomp", {{"defaultAction", "SCMP_ACT_ALLOW"}}},
      {"rootfsPropagation", "rslave"}};
  auto l = *oci::parse_spec(j.dump()).linux_;
  EXPECT_EQ(l.find_namespace("network")->path, "/proc/1/ns/net");
  EXPECT_EQ(l.uid_mappings[0].host_id, 1000u);
  EXPECT_EQ(*l.resources->memory->limit, 1048576);
  EXPECT_EQ(*l.resources->pids_limit, 5);
  EXPECT_EQ(l.seccomp->default_action, "SCMP_ACT_ALLOW");
}

TEST(ParseSpecErrors, NameTheFieldAndValue) {
  EXPECT_EQ(error_of(json::parse("{}")), "config.json: ociVersion: required");
  json j = minimal();
  j["process"]["args"] = "/bin/true";
  EXPECT_EQ(error_of(j), "config.json: process.args: expected an array of strings, got string");
  j = minimal();
  j["process"]["args"] = {"/bin/true", 3};
  EXPECT_EQ(error_of(j), "config.json: process.args[1]: expected a string, got integer");
  j = minimal();
  j["root"]["path"] = "../outside";
  EXPECT_EQ(error_of(j), "config.json: root.path: relative path \"../outside\" leaves the bundle");
  j = minimal();
  j["linux"] = {{"namespaces", {{{"type", "pid"}}, {{"type", "foo"}}}}};
  EXPECT_EQ(error_of(j), "config.json: linux.namespaces[1].type: unknown namespace type \"foo\"");
  j = minimal();
  j["linux"] = {{"namespaces", {{{"type", "pid"}}, {{"type", "pid"}}}}};
  EXPECT_EQ(error_of(j), "config.json: linux.namespaces[1].type: duplicate namespace \"pid\"");
  j = minimal();
  j["process"].erase("cwd");
  EXPECT_EQ(error_of(j), "config.json: process.cwd: required");
  j = minimal();
  j["process"]["capabilities"] = {{"bounding", {"CAP_TEST"}}};
  EXPECT_EQ(error_of(j),
            "config.json: process.capabilities.bounding[0]: unknown capability \"CAP_TEST\"");
  j = minimal();
  j["process"]["rlimits"] = {{{"type", "RLIMIT_FOO"}, {"soft", 1}, {"hard", 1}}};
  EXPECT_EQ(error_of(j), "config.json: process.rlimits[0].type: unknown rlimit \"RLIMIT_FOO\"");
  j = minimal();
  j["process"]["oomScoreAdj"] = 5000;
  EXPECT_EQ(error_of(j), "config.json: process.oomScoreAdj: must be -1000..1000");
  j = minimal();
  j["process"]["user"] = {{"uid", -1}};
  EXPECT_EQ(error_of(j), "config.json: process.user.uid: expected a non-negative integer, got -1");
  j = minimal();
  j["ociVersion"] = "2.0.0";
  EXPECT_EQ(error_of(j), "config.json: ociVersion: unsupported version \"2.0.0\"");
  j = minimal();
  j["mounts"] = {{{"destination", "relative"}}};
  EXPECT_EQ(error_of(j), "config.json: mounts[0].destination: must be absolute, got \"relative\"");
  j = minimal();
  j["hooks"] = {{"prestart", {{{"path", "/x"}, {"timeout", 0}}}}};
  EXPECT_EQ(error_of(j),
            "config.json: hooks.prestart[0].timeout: must be greater than zero, got 0");
}

TEST(ParseSpecErrors, MalformedJson) {
  try {
    oci::parse_spec("{\"ociVersion\": ");
    FAIL();
  } catch (const Error& e) {
    std::string msg = e.what();
    EXPECT_EQ(msg.rfind("config.json: invalid JSON: parse error at line 1, column 16", 0), 0u)
        << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos);
  }
}

TEST(Capabilities, NamesAndNumbers) {
  EXPECT_EQ(oci::capability_from_name("CAP_SYS_ADMIN"), 21);
  EXPECT_EQ(oci::capability_from_name("CAP_CHECKPOINT_RESTORE"), 40);
  EXPECT_FALSE(oci::capability_from_name("CAP_TEST"));
  EXPECT_EQ(oci::capability_name(0), "CAP_CHOWN");
}

TEST(Rlimits, Names) {
  EXPECT_TRUE(oci::rlimit_from_name("RLIMIT_NOFILE"));
  EXPECT_FALSE(oci::rlimit_from_name("NOFILE"));
}
