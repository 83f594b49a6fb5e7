// The container record: what racker writes to meta.json and reads back, tolerant of files
// written by hand or by older rackers.
#include <gtest/gtest.h>

#include <cstdlib>
#include <string>
#include <tuple>

#include "base/error.hpp"
#include "base/fs.hpp"
#include "engine/containers.hpp"
#include "test_support.hpp"

namespace racker::engine {
namespace {

TEST(ContainerRecord, RoundTripsEveryField) {
  ContainerRecord r;
  r.id = std::string(64, 'a');
  r.name = "web";
  r.image = "racker.local/x:1";
  r.image_id = "sha256:" + std::string(64, 'b');
  r.created = "2026-12-07T03:00:00Z";
  r.command = {"/bin/sh", "-c", "echo hi"};
  r.stop_signal = "SIGRTMIN+3";
  r.booted = true;
  r.boot_timeout_s = 7;
  r.interactive = true;
  r.never_started = true;
  r.exit_code = 3;
  r.publish = {{"", 0, 80, "tcp"}, {"127.0.0.1", 5353, 53, "udp"}};
  r.ports = {{"", 40000, 80, "tcp"}, {"127.0.0.1", 5353, 53, "udp"}};
  auto back = ContainerRecord::from_json(nlohmann::json::parse(r.to_json().dump()));
  EXPECT_EQ(back.publish, r.publish);
  EXPECT_EQ(back.ports, r.ports);
  EXPECT_EQ(back.id, r.id);
  EXPECT_EQ(back.name, "web");
  EXPECT_EQ(back.image, r.image);
  EXPECT_EQ(back.image_id, r.image_id);
  EXPECT_EQ(back.created, r.created);
  EXPECT_EQ(back.command, r.command);
  EXPECT_EQ(back.stop_signal, "SIGRTMIN+3");
  EXPECT_TRUE(back.booted);
  EXPECT_EQ(back.boot_timeout_s, 7);
  EXPECT_TRUE(back.interactive);
  EXPECT_TRUE(back.never_started);
  EXPECT_EQ(back.exit_code, 3);
}

TEST(ContainerRecord, MistypedOrMissingFieldsTakeDefaults) {
  auto r = ContainerRecord::from_json(nlohmann::json::parse(
      R"({"name": ["x"], "command": "sh", "booted": "yes", "exit_code": 1.5, "state": 4})"));
  EXPECT_EQ(r.name, "");
  EXPECT_TRUE(r.command.empty());
  EXPECT_FALSE(r.booted);
  EXPECT_FALSE(r.exit_code.has_value());
  EXPECT_FALSE(r.never_started);
  EXPECT_EQ(r.boot_timeout_s, 30);
  EXPECT_EQ(ContainerRecord::from_json(nlohmann::json::array()).name, "");
  // what a foreground run that has not ended writes: no exit code, not "created"
  ContainerRecord fresh;
  EXPECT_FALSE(fresh.to_json().contains("exit_code"));
  EXPECT_FALSE(fresh.to_json().contains("state"));
}

TEST(ContainerStore, SavedRecordsAreListedNewestFirstWithTheirStatus) {
  test::TempDir tmp("racker-containers");
  const std::string& root = tmp.path();
  ContainerStore store(root, root + "/state");
  for (auto [hex, name, created] : {std::tuple{'1', "old", "2026-01-01T00:00:00Z"},
                                    std::tuple{'2', "new", "2026-06-01T00:00:00Z"}}) {
    ContainerRecord r;
    r.id = std::string(64, hex);
    r.name = name;
    r.created = created;
    if (hex == '1') r.exit_code = 137;
    if (hex == '2') r.never_started = true;
    mkdir_p(store.dir_of(r.id), 0700);
    store.save(r);
  }
  mkdir_p(store.dir_of(std::string(64, '3')), 0700);  // a run killed before its first save
  auto all = store.list();
  ASSERT_EQ(all.size(), 3u);
  EXPECT_EQ(store.find("new").status, ContainerStatus::created);
  EXPECT_EQ(store.find("new").status_text(), "Created");
  EXPECT_EQ(store.find("old").status_text(), "Exited (137)");
  EXPECT_FALSE(store.find("old").running());
  EXPECT_EQ(store.find(std::string(64, '3')).name(), "racker-333333333333");
  EXPECT_EQ(store.find("2222").id, std::string(64, '2'));  // a unique id prefix
  EXPECT_EQ(all[0].name(), "new");
  try {
    store.find("nope");
    ADD_FAILURE() << "found a container that is not there";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::not_found);
  }
}

}  // namespace
}  // namespace racker::engine
