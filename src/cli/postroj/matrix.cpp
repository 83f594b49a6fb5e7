// postroj matrix: every image of a matrix file with every probe, --jobs at a time, each cell a
// `postroj pkgprobe` of its own (own container, own network, own process: a crash or a hang
// stays in its cell), one merged report.
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
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

std::vector<std::string> cell_argv(const Globals& g, const probe::MatrixCell& c,
                                   const std::string& report) {
  std::vector<std::string> a = {"postroj",      "--quiet",    "--store-root",    g.store_root,
                                "--state-root", g.state_root, "--package-cache", g.package_cache};
  if (!g.bake_cache.empty()) a.insert(a.end(), {"--bake-cache", g.bake_cache});
  if (!g.catalog.empty()) a.insert(a.end(), {"--catalog", g.catalog});
  if (!g.registries_conf.empty()) a.insert(a.end(), {"--registries-conf", g.registries_conf});
  a.push_back("pkgprobe");
  a.push_back("--image=" + c.image);
  for (auto& p : c.probe.packages) a.push_back("--package=" + p);
  for (auto& u : c.probe.units) a.push_back("--check-unit=" + u);
  for (auto& n : c.probe.network) a.push_back("--check-network=" + n);
  if (!c.probe.http_status.empty()) a.push_back("--http-status=" + c.probe.http_status);
  a.push_back("--timeout=" + std::to_string(c.probe.timeout_s));
  a.push_back("--network-timeout=" + std::to_string(c.probe.network_timeout_s));
  a.push_back("--report=json:" + report);
  return a;
}

pid_t spawn(const std::vector<std::string>& args, const std::string& log) {
  std::vector<char*> argv;
  for (auto& s : args) argv.push_back(const_cast<char*>(s.c_str()));
  argv.push_back(nullptr);
  UniqueFd out(::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  if (!out) throw_errno("create " + log);
  pid_t pid = ::fork();
  if (pid < 0) throw_errno("fork");
  if (pid == 0) {
    ::dup2(out.get(), 1);
    ::dup2(out.get(), 2);
    int null = ::open("/dev/null", O_RDONLY);
    if (null >= 0) ::dup2(null, 0);
    ::execv("/proc/self/exe", argv.data());
    _exit(127);
  }
  return pid;
}

// The cell's suite: its report's, named after the cell; a failed one with its log's end when
// the probe left no report (it crashed, or was killed).
probe::SuiteResult suite_of(const probe::MatrixCell& c, const std::string& report,
                            const std::string& log, int status) {
  probe::SuiteResult s;
  try {
    auto r = probe::report_from_json(read_file(report));
    if (!r.suites.empty()) s = r.suites.front();
  } catch (const Error&) {
    probe::CheckResult fail;
    fail.name = "pkgprobe";
    fail.message = "the probe ended without a report (" +
                   (WIFSIGNALED(status) ? "signal " + std::to_string(WTERMSIG(status))
                                        : "exit status " + std::to_string(WEXITSTATUS(status))) +
                   ")";
    std::string text = read_file_if_exists(log).value_or("");
    fail.detail = text.size() > 2000 ? text.substr(text.size() - 2000) : text;
    s.checks.push_back(fail);
  }
  s.image = c.image;
  s.name = "pkgprobe " + c.image + " " + c.probe.name;
  return s;
}

}  // namespace

int cmd_matrix(const std::vector<std::string>& args, Globals& g) {
  long cores = ::sysconf(_SC_NPROCESSORS_ONLN);
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
  int jobs = static_cast<int>(cores > 0 ? cores : 1);
  if (a.has("jobs")) {
    auto n = parse_int(a.get("jobs"));
    if (!n || *n < 1 || *n > 256) throw UsageError("invalid --jobs \"" + a.get("jobs") + "\"");
    jobs = static_cast<int>(*n);
  }
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

  std::string work = g.state_root + "-matrix-" + std::to_string(::getpid());
  mkdir_p(work, 0700);
  std::vector<probe::SuiteResult> suites(cells.size());
  std::map<pid_t, size_t> running;
  size_t next = 0;
  auto report_of = [&](size_t i) { return work + "/" + std::to_string(i) + ".json"; };
  auto log_of = [&](size_t i) { return work + "/" + std::to_string(i) + ".log"; };
  while (next < cells.size() || !running.empty()) {
    while (next < cells.size() && static_cast<int>(running.size()) < jobs &&
           !engine::OsContainer::interrupted()) {
      size_t i = next++;
      if (!unavailable[cells[i].image].empty()) {
        probe::CheckResult fail;
        fail.name = "pull image " + cells[i].image;
        fail.message = unavailable[cells[i].image];
        suites[i].checks.push_back(fail);
        suites[i].image = cells[i].image;
        suites[i].name = "pkgprobe " + cells[i].image + " " + cells[i].probe.name;
        continue;
      }
      if (!g.quiet)
        std::fprintf(stderr, "postroj: [%zu/%zu] %s %s\n", i + 1, cells.size(),
                     cells[i].image.c_str(), cells[i].probe.name.c_str());
      running[spawn(cell_argv(g, cells[i], report_of(i)), log_of(i))] = i;
    }
    if (running.empty()) break;  // (interrupted: nothing more starts)
    int status = 0;
    pid_t pid = ::waitpid(-1, &status, 0);
    if (pid < 0) {
      if (errno == EINTR) continue;
      throw_errno("wait for the probes");
    }
    auto it = running.find(pid);
    if (it == running.end()) continue;
    size_t i = it->second;
    running.erase(it);
    suites[i] = suite_of(cells[i], report_of(i), log_of(i), status);
  }
  remove_tree(work);

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
