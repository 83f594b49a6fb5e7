#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "base/error.hpp"
#include "base/fs.hpp"
#include "image/auth.hpp"
#include "test_support.hpp"

using namespace racker;
using namespace racker::image;

namespace {

// Points HOME, XDG_RUNTIME_DIR and REGISTRY_AUTH_FILE into a temp dir, restoring them after.
class AuthTest : public ::testing::Test {
 protected:
  void SetUp() override {
    env_.set("HOME", dir_ + "/home");
    env_.set("XDG_RUNTIME_DIR", dir_ + "/run");
    env_.unset("REGISTRY_AUTH_FILE");
  }
  test::TempDir tmp_{"racker-auth"};
  const std::string dir_ = tmp_.path();
  test::ScopedEnv env_;
};

}  // namespace

TEST(Base64, RoundTrip) {
  EXPECT_EQ(base64_encode(""), "");
  EXPECT_EQ(base64_encode("f"), "Zg==");
  EXPECT_EQ(base64_encode("fo"), "Zm8=");
  EXPECT_EQ(base64_encode("foo"), "Zm9v");
  EXPECT_EQ(base64_encode("user:pass"), "dXNlcjpwYXNz");
  EXPECT_EQ(base64_decode("dXNlcjpwYXNz"), "user:pass");
  EXPECT_EQ(base64_decode("Zm8="), "fo");
  EXPECT_EQ(base64_decode("Zm8"), "fo");
  EXPECT_FALSE(base64_decode("Zm8*"));
  std::string all;
  for (int i = 0; i < 256; ++i) all.push_back(static_cast<char>(i));
  EXPECT_EQ(base64_decode(base64_encode(all)), all);
}

TEST_F(AuthTest, SearchPathFollowsPodman) {
  EXPECT_EQ(primary_auth_file(), dir_ + "/run/containers/auth.json");
  EXPECT_EQ(primary_auth_file("/x/auth.json"), "/x/auth.json");
  setenv("REGISTRY_AUTH_FILE", "/y/auth.json", 1);
  EXPECT_EQ(primary_auth_file(), "/y/auth.json");
  EXPECT_EQ(auth_file_search_path(),
            (std::vector<std::string>{"/y/auth.json", dir_ + "/home/.docker/config.json"}));
  unsetenv("REGISTRY_AUTH_FILE");
  unsetenv("XDG_RUNTIME_DIR");
  EXPECT_EQ(primary_auth_file(), "/run/containers/" + std::to_string(getuid()) + "/auth.json");
}

TEST_F(AuthTest, StoreLookupRemoveRoundTrip) {
  EXPECT_TRUE(lookup_credentials("registry.example:5000").empty());
  store_credentials("registry.example:5000", {"alice", "s3cr:et"});
  store_credentials("docker.io", {"bob", "hub"});
  std::string file = dir_ + "/run/containers/auth.json";
  struct stat st;
  ASSERT_EQ(stat(file.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  ASSERT_EQ(stat((dir_ + "/run/containers").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);

  auto j = nlohmann::json::parse(read_file(file));
  EXPECT_EQ(j["auths"]["registry.example:5000"]["auth"], base64_encode("alice:s3cr:et"));
  EXPECT_TRUE(j["auths"].contains("docker.io"));

  Credentials c = lookup_credentials("registry.example:5000");
  EXPECT_EQ(c.username, "alice");
  EXPECT_EQ(c.password, "s3cr:et");
  EXPECT_EQ(lookup_credentials("index.docker.io").username, "bob");
  EXPECT_TRUE(lookup_credentials("registry.example").empty());  // the port is part of the key

  store_credentials("registry.example:5000", {"alice", "new"});  // overwrite keeps the rest
  EXPECT_EQ(lookup_credentials("registry.example:5000").password, "new");
  EXPECT_EQ(lookup_credentials("docker.io").password, "hub");

  EXPECT_TRUE(remove_credentials("registry.example:5000"));
  EXPECT_FALSE(remove_credentials("registry.example:5000"));
  EXPECT_TRUE(lookup_credentials("registry.example:5000").empty());
  EXPECT_EQ(lookup_credentials("docker.io").username, "bob");
  ASSERT_EQ(stat(file.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
}

TEST_F(AuthTest, ExplicitAuthfileAndUnknownFieldsSurvive) {
  std::string file = dir_ + "/custom/auth.json";
  mkdir_p(dir_ + "/custom");
  write_file_atomic(file, R"({"auths":{"other:1":{"auth":"eDp5"}},"credHelpers":{"a":"b"}})");
  store_credentials("mine:2", {"u", "p"}, file);
  auto j = nlohmann::json::parse(read_file(file));
  EXPECT_EQ(j["credHelpers"]["a"], "b");
  EXPECT_EQ(lookup_credentials("other:1", file).username, "x");
  EXPECT_EQ(lookup_credentials("other:1", file).password, "y");
  EXPECT_EQ(lookup_credentials("mine:2", file).username, "u");
  EXPECT_TRUE(lookup_credentials("mine:2").empty());  // not in the default file

  write_file_atomic(file, "{not json");
  EXPECT_EQ(test::error_of([&] { lookup_credentials("mine:2", file); }),
            "parse " + file + ": not a valid JSON object");
}

TEST_F(AuthTest, DockerConfigFallbackAndHubAliases) {
  mkdir_p(dir_ + "/home/.docker");
  write_file_atomic(
      dir_ + "/home/.docker/config.json",
      R"({"auths":{"https://index.docker.io/v1/":{"auth":")" + base64_encode("hubuser:hubpass") +
          R"("},"http://legacy.example/v2/":{"auth":")" + base64_encode("l:p") + R"("}}})");
  Credentials c = lookup_credentials("docker.io");
  EXPECT_EQ(c.username, "hubuser");
  EXPECT_EQ(c.password, "hubpass");
  EXPECT_EQ(lookup_credentials("registry-1.docker.io").username, "hubuser");
  EXPECT_EQ(lookup_credentials("legacy.example").username, "l");

  // The containers auth file wins over Docker's.
  store_credentials("index.docker.io", {"podman", "pw"});
  EXPECT_EQ(lookup_credentials("docker.io").username, "podman");
  auto j = nlohmann::json::parse(read_file(dir_ + "/run/containers/auth.json"));
  EXPECT_TRUE(j["auths"].contains("docker.io"));
  EXPECT_TRUE(remove_credentials("docker.io"));
  EXPECT_EQ(lookup_credentials("docker.io").username, "hubuser");  // docker's file is untouched
}
