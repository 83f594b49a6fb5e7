// postroj matrix files, shards and the reports merged from the cells' JSON reports.
#include <gtest/gtest.h>

#include <set>
#include <string>

#include "base/error.hpp"
#include "probe/matrix.hpp"
#include "probe/report.hpp"

namespace racker::probe {
namespace {

const char* kMatrix = R"({
  "images": ["debian-bookworm", "debian-trixie", "debian-bullseye"],
  "probes": [{"name": "web", "packages": ["debs/webfs.deb", "/abs/ucf.deb"],
              "units": ["webfs"], "network": ["http://localhost:8000"],
              "http_status": "2xx", "timeout": 90},
             {"name": "journald", "units": ["systemd-journald"]}]})";

std::string why(const std::string& text) {
  try {
    parse_matrix(text, "m.json", "/base");
  } catch (const Error& e) {
    return e.what();
  }
  return "accepted";
}

TEST(Matrix, ParsesProbesAndResolvesPaths) {
  auto m = parse_matrix(kMatrix, "m.json", "/base");
  ASSERT_EQ(m.images.size(), 3u);
  ASSERT_EQ(m.probes.size(), 2u);
  EXPECT_EQ(m.probes[0].packages,
            (std::vector<std::string>{"/base/debs/webfs.deb", "/abs/ucf.deb"}));
  EXPECT_EQ(m.probes[0].timeout_s, 90);
  EXPECT_EQ(m.probes[0].network_timeout_s, 30);
  EXPECT_EQ(m.probes[0].http_status, "2xx");
  EXPECT_EQ(m.probes[1].units, std::vector<std::string>{"systemd-journald"});
}

TEST(Matrix, ErrorsNameTheField) {
  EXPECT_NE(why("{").find("m.json: invalid JSON"), std::string::npos);
  EXPECT_NE(why(R"({"images": [], "probes": [{"name": "a"}]})").find("at least one label"),
            std::string::npos);
  EXPECT_NE(why(R"({"images": ["x"], "probes": []})").find("\"probes\" must be"),
            std::string::npos);
  EXPECT_NE(why(R"({"images": ["x"], "probes": [{"units": []}]})").find("probes[0]: missing"),
            std::string::npos);
  EXPECT_NE(why(R"({"images": ["x"], "probes": [{"name": "a"}, {"name": "a"}]})")
                .find("duplicate probe name"),
            std::string::npos);
  EXPECT_NE(why(R"({"images": ["x"], "probes": [{"name": "a", "unit": ["x"]}]})")
                .find("unknown key \"unit\""),
            std::string::npos);
  EXPECT_NE(why(R"({"images": ["x"], "probes": [{"name": "a", "timeout": 0}]})")
                .find("\"timeout\" must be"),
            std::string::npos);
}

TEST(Matrix, ShardsCoverEveryCellOnce) {
  auto m = parse_matrix(kMatrix, "m.json", "/base");
  auto all = matrix_cells(m);
  ASSERT_EQ(all.size(), 6u);
  EXPECT_EQ(all[1].image, "debian-bookworm");
  EXPECT_EQ(all[1].probe.name, "journald");
  EXPECT_EQ(all[2].image, "debian-trixie");
  for (int n : {1, 2, 4, 7}) {
    std::multiset<size_t> seen;
    for (int i = 1; i <= n; ++i)
      for (auto& c : matrix_cells(m, i, n)) seen.insert(c.index);
    EXPECT_EQ(seen, (std::multiset<size_t>{0, 1, 2, 3, 4, 5})) << n;
  }
  EXPECT_EQ(parse_shard("2/3"), (std::pair<int, int>{2, 3}));
  for (const char* bad : {"0/2", "3/2", "1", "a/b", "1/0", "/2"})
    EXPECT_THROW(parse_shard(bad), Error) << bad;
}

TEST(Report, ReadsBackWhatToJsonWrote) {
  Report r;
  SuiteResult s;
  s.name = "pkgprobe debian-bookworm";
  s.image = "debian-bookworm";
  s.checks.push_back({"boot debian-bookworm", true, false, 0.25, "", ""});
  s.checks.push_back({"unit x.service", false, false, 1.5, "unit x: failed", "journal\nlines"});
  s.checks.push_back({"network http://h/", false, true, 0, "skipped", ""});
  r.suites.push_back(s);
  auto back = report_from_json(to_json(r));
  EXPECT_EQ(to_json(back), to_json(r));
  EXPECT_THROW(report_from_json("[]"), Error);
}

}  // namespace
}  // namespace racker::probe
