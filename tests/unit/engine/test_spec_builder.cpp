#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "base/error.hpp"
#include "engine/spec_builder.hpp"
#include "oci/spec.hpp"

using namespace racker;
using namespace racker::engine;
using nlohmann::json;

namespace {

json image(json config) {
  return {{"config", config}, {"rootfs", {{"diff_ids", json::array()}}}};
}

BuiltSpec build(const json& img, const RunFlags& f) {
  return build_spec(img, f, "/store/c/rootfs", std::string(64, 'a'), {});
}

bool has_ns(const json& spec, const std::string& type) {
  for (auto& n : spec["linux"]["namespaces"])
    if (n["type"] == type) return true;
  return false;
}

}  // namespace

TEST(SpecBuilder, DockerEntrypointAndCmdRules) {
  json img = image({{"Entrypoint", {"echo", "entry"}}, {"Cmd", {"default"}}});
  RunFlags f;
  EXPECT_EQ(build(img, f).process_args, (std::vector<std::string>{"echo", "entry", "default"}));
  f.args = {"x", "y"};
  EXPECT_EQ(build(img, f).process_args, (std::vector<std::string>{"echo", "entry", "x", "y"}));
  f.args = {};
  f.entrypoint = std::vector<std::string>{"/bin/sh"};
  EXPECT_EQ(build(img, f).process_args, (std::vector<std::string>{"/bin/sh"}));
  f.entrypoint = std::vector<std::string>{};
  f.args = {"ls", "-l"};
  EXPECT_EQ(build(img, f).process_args, (std::vector<std::string>{"ls", "-l"}));
}

TEST(SpecBuilder, NoCommandIsAnError) {
  try {
    build(image(json::object()), RunFlags{});
    FAIL();
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "no command: the image has no Cmd or Entrypoint and none was given");
  }
}

TEST(SpecBuilder, EnvWorkdirHostnameAndParsesAsOciConfig) {
  json img = image({{"Cmd", {"sh"}}, {"Env", {"PATH=/bin", "A=1"}}, {"WorkingDir", "/srv"}});
  RunFlags f;
  f.env = {"A=2", "B=3"};
  auto b = build(img, f);
  auto spec = oci::parse_spec(b.config.dump());  // what we build is what the runtime accepts
  EXPECT_EQ(spec.process->cwd, "/srv");
  auto& env = spec.process->env;
  EXPECT_NE(std::find(env.begin(), env.end(), "PATH=/bin"), env.end());
  EXPECT_NE(std::find(env.begin(), env.end(), "A=2"), env.end());
  EXPECT_EQ(std::find(env.begin(), env.end(), "A=1"), env.end());
  EXPECT_EQ(spec.hostname, "aaaaaaaaaaaa");
  EXPECT_EQ(spec.root.path, "/store/c/rootfs");
  EXPECT_FALSE(spec.root.readonly);
  EXPECT_EQ(spec.linux_->cgroups_path, "/racker/" + std::string(64, 'a'));
}

TEST(SpecBuilder, NetworkModes) {
  json img = image({{"Cmd", {"sh"}}});
  RunFlags f;
  EXPECT_TRUE(has_ns(build(img, f).config, "network"));
  f.network = "none";
  EXPECT_TRUE(has_ns(build(img, f).config, "network"));
  f.network = "host";
  EXPECT_FALSE(has_ns(build(img, f).config, "network"));
  f.network = "bridge0";
  EXPECT_THROW(build(img, f), Error);
}

TEST(SpecBuilder, CapabilitiesAndPrivileged) {
  json img = image({{"Cmd", {"sh"}}});
  RunFlags f;
  f.cap_drop = {"ALL"};
  f.cap_add = {"net_admin"};
  auto caps = build(img, f).config["process"]["capabilities"]["bounding"];
  EXPECT_EQ(caps, json({"CAP_NET_ADMIN"}));
  f = RunFlags{};
  f.cap_add = {"BOGUS"};
  EXPECT_THROW(build(img, f), Error);
  f = RunFlags{};
  f.privileged = true;
  auto spec = build(img, f).config;
  EXPECT_FALSE(spec["linux"].contains("maskedPaths"));
  EXPECT_EQ(spec["process"]["capabilities"]["bounding"].size(), 41u);
}

TEST(SpecBuilder, VolumesTmpfsAndResources) {
  json img = image({{"Cmd", {"sh"}}});
  RunFlags f;
  f.volumes = {parse_volume("/host/data:/data:ro")};
  f.tmpfs = {"/scratch:size=64m"};
  f.memory = parse_memory("64m");
  f.cpus = 1.5;
  f.pids_limit = 20;
  auto spec = oci::parse_spec(build(img, f).config.dump());
  bool vol = false, tmp = false;
  for (auto& m : spec.mounts) {
    if (m.destination == "/data") {
      vol = m.source == "/host/data" &&
            std::find(m.options.begin(), m.options.end(), "ro") != m.options.end();
    }
    if (m.destination == "/scratch") tmp = m.type == "tmpfs";
  }
  EXPECT_TRUE(vol);
  EXPECT_TRUE(tmp);
  EXPECT_EQ(*spec.linux_->resources->memory->limit, 64LL << 20);
  EXPECT_EQ(*spec.linux_->resources->cpu->quota, 150000);
  EXPECT_EQ(*spec.linux_->resources->pids_limit, 20);
}

TEST(SpecBuilder, FlagParsers) {
  EXPECT_EQ(parse_memory("1g"), 1LL << 30);
  EXPECT_EQ(parse_memory("512m"), 512LL << 20);
  EXPECT_EQ(parse_memory("100"), 100);
  EXPECT_EQ(parse_memory("2kb"), 2048);
  EXPECT_THROW(parse_memory("lots"), Error);
  EXPECT_THROW(parse_memory("-5m"), Error);
  EXPECT_THROW(parse_volume("data:/data"), Error);  // named volumes
  EXPECT_THROW(parse_volume("/a:/b:rx"), Error);
  EXPECT_THROW(parse_volume("/a"), Error);
  auto v = parse_volume("/a:/b");
  EXPECT_FALSE(v.readonly);
}

TEST(SpecBuilder, InitRunsThePayloadBelowAReadOnlyInit) {
  json img = image({{"Cmd", {"sleep", "1"}}});
  RunFlags f;
  f.init = true;
  EXPECT_THROW(build(img, f), Error);  // no init binary given
  f.init_path = "/usr/bin/tini-static";
  auto b = build(img, f);
  EXPECT_EQ(b.process_args, (std::vector<std::string>{"sleep", "1"}));
  EXPECT_EQ(b.config["process"]["args"], json({kInitPath, "--", "sleep", "1"}));
  bool mounted = false;
  for (auto& m : b.config["mounts"])
    if (m["destination"] == kInitPath) {
      mounted = true;
      EXPECT_EQ(m["source"], "/usr/bin/tini-static");
      auto o = m["options"].get<std::vector<std::string>>();
      EXPECT_NE(std::find(o.begin(), o.end(), "ro"), o.end());
    }
  EXPECT_TRUE(mounted);
}
