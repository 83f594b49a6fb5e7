// postroj matrix: every image of a matrix file with every probe, --jobs at a time, each cell a
// `postroj pkgprobe` of its own (own container, own network, own process: a crash or a hang
// stays in its cell), one merged report.
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <map>

#include "base/error.hpp"
#include "base/fs.hpp"
#include "base/strings.hpp"
#include "cli/postroj/commands.hpp"
#include "engine/os_container.hpp"
#include "probe/acquire.hpp"
#include "probe/matrix.hpp"
#include "probe/netcheck.hpp"
#include "probe/report.hpp"

namespace racker::cli::postroj {
namespace {

// The pkgprobe of one cell, after the global options.
std::vector<std::string> cell_args(const probe::MatrixCell& c) {
  std::vector<std::string> a = {"pkgprobe", "--image=" + c.image};
  for (auto& p : c.probe.packages) a.push_back("--package=" + p);
  for (auto& u : c.probe.units) a.push_back("--check-unit=" + u);
  for (auto& n : c.probe.network) a.push_back("--check-network=" + n);
  if (!c.probe.http_status.empty()) a.push_back("--http-status=" + c.probe.http_status);
  a.push_back("--timeout=" + std::to_string(c.probe.timeout_s));
  a.push_back("--network-timeout=" + std::to_string(c.probe.network_timeout_s));
  return a;
}

}  // namespace

int cmd_matrix(const std::vector<std::string>& args, Globals& g) {
  auto a = parse_command(
      args,
      {{"jobs", 'j', true, false, "probes at a time (default: the number of cores)"},
       {"shard", 0, true, false, "I/N: only the cells whose index is I-1 modulo N"},
       {"report", 0, true, true, "junit:FILE or json:FILE (repeatable)"}},
      "matrix FILE [--jobs N] [--shard I/N] [--report=junit:FILE|json:FILE]",
      "Runs every image of the matrix FILE with every probe, each cell a pkgprobe in its own\n"
      "container and network, --jobs of them at a time, and writes one report of them all.\n"
      "FILE (JSON): {\"images\": [LABEL...], \"probes\": [{\"name\", \"packages\": [PATH|URL...],\n"
      "\"units\": [UNIT...], \"network\": [URL...], \"http_status\", \"timeout\",\n"
      "\"network_timeout\"}...]}; relative package paths are from FILE's directory. Cells are\n"
      "numbered image by image; --shard I/N runs those numbered I-1 modulo N, so N machines\n"
      "with shards 1/N ... N/N run each cell exactly once and their JUnit files merge.\n"
      "Exit status: 0 when every cell passed, 1 when one failed, 2 for usage errors.\n\n",
      1, 1, g);
  std::string file = a.positional[0];
  std::string path = file[0] == '/' ? file : real_path(".") + "/" + file;
  std::string dir = path.substr(0, path.rfind('/'));
  probe::Matrix m;
  try {
    m = probe::parse_matrix(read_file(path), file, dir);
  } catch (const Error& e) {
    throw UsageError(e.what());
  }
  int jobs = jobs_option(a);
  std::pair<int, int> shard = {1, 1};
  std::vector<probe::ReportSpec> reports;
  try {
    if (a.has("shard")) shard = probe::parse_shard(a.get("shard"));
    for (auto& r : a.all("report")) reports.push_back(probe::parse_report_spec(r));
    for (auto& p : m.probes)
      if (!p.http_status.empty()) probe::parse_status_classes(p.http_status);
  } catch (const Error& e) {
    throw UsageError(e.what());
  }
  auto catalog = probe::Catalog::load(g.catalog);
  for (auto& l : m.images) catalog.at(l);  // unknown labels: usage errors before any work
  auto cells = probe::matrix_cells(m, shard.first, shard.second);

  // each image once, before the probes run side by side (one bake, not one per cell)
  probe::AcquireOptions ao = probe::acquire_options(probe_env(g));
  std::map<std::string, std::string> unavailable;
  for (auto& c : cells) {
    if (unavailable.count(c.image)) continue;
    try {
      probe::acquire_image(catalog.at(c.image), ao);
      unavailable[c.image] = "";
    } catch (const Error& e) {
      unavailable[c.image] = e.what();
    }
  }

  std::vector<probe::SuiteResult> suites(cells.size());
  std::vector<ChildProbe> children;
  std::vector<size_t> child_cell;
  for (size_t i = 0; i < cells.size(); ++i) {
    const auto& c = cells[i];
    std::string name = "pkgprobe " + c.image + " " + c.probe.name;
    if (!unavailable[c.image].empty()) {
      probe::CheckResult fail;
      fail.name = "pull image " + c.image;
      fail.message = unavailable[c.image];
      suites[i].checks.push_back(fail);
      suites[i].image = c.image;
      suites[i].name = name;
      continue;
    }
    children.push_back({c.image, name, c.image + " " + c.probe.name, cell_args(c)});
    child_cell.push_back(i);
  }
  auto done = run_children(g, children, jobs);
  for (size_t k = 0; k < done.size(); ++k) suites[child_cell[k]] = done[k];

  probe::Report report;
  for (auto& s : suites)
    if (!s.name.empty()) report.suites.push_back(s);
  out(probe::to_human(report));
  int passed = 0;
  for (auto& s : report.suites) passed += s.passed();
  out(std::to_string(passed) + " of " + std::to_string(report.suites.size()) +
      " cells passed (shard " + std::to_string(shard.first) + "/" + std::to_string(shard.second) +
      ", " + std::to_string(jobs) + " at a time)\n");
  for (auto& r : reports) probe::write_report(report, r);
  if (int sig = engine::OsContainer::interrupted()) return 128 + sig;
  return report.passed() ? 0 : 1;
}

}  // namespace racker::cli::postroj
