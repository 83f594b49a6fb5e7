// Probes in child processes, --jobs at a time (postroj matrix and selftest): each child is a
// `postroj` of its own with this process's global options (own container, own network, own
// process: a crash or a hang stays in its probe), writing a JSON report that is read back.
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <map>

#include "base/error.hpp"
#include "base/fd.hpp"
#include "base/fs.hpp"
#include "base/strings.hpp"
#include "cli/postroj/commands.hpp"
#include "engine/os_container.hpp"
#include "probe/report.hpp"

namespace racker::cli::postroj {
namespace {

std::vector<std::string> child_argv(const Globals& g, const ChildProbe& c,
                                    const std::string& report) {
  std::vector<std::string> a = {"postroj",      "--quiet",    "--store-root",    g.store_root,
                                "--state-root", g.state_root, "--package-cache", g.package_cache};
  if (!g.bake_cache.empty()) a.insert(a.end(), {"--bake-cache", g.bake_cache});
  if (!g.catalog.empty()) a.insert(a.end(), {"--catalog", g.catalog});
  if (!g.registries_conf.empty()) a.insert(a.end(), {"--registries-conf", g.registries_conf});
  if (!g.download_cache.empty()) a.insert(a.end(), {"--download-cache", g.download_cache});
  if (!g.arch.empty()) a.insert(a.end(), {"--arch", g.arch});
  a.insert(a.end(), c.args.begin(), c.args.end());
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

// The child's suite: its report's, named as asked; a failed one with its log's end when the
// child left no report (it crashed, or was killed).
probe::SuiteResult suite_of(const ChildProbe& c, const std::string& report, const std::string& log,
                            int status) {
  probe::SuiteResult s;
  try {
    auto r = probe::report_from_json(read_file(report));
    if (!r.suites.empty()) s = r.suites.front();
  } catch (const Error&) {
    probe::CheckResult fail;
    fail.name = c.args.empty() ? "probe" : c.args.front();
    fail.message = "the probe ended without a report (" +
                   (WIFSIGNALED(status) ? "signal " + std::to_string(WTERMSIG(status))
                                        : "exit status " + std::to_string(WEXITSTATUS(status))) +
                   ")";
    std::string text = read_file_if_exists(log).value_or("");
    fail.detail = text.size() > 2000 ? text.substr(text.size() - 2000) : text;
    s.checks.push_back(fail);
  }
  s.image = c.image;
  if (!c.name.empty())
    s.name = c.name;
  else if (s.name.empty())
    s.name = c.what;
  return s;
}

}  // namespace

int jobs_option(const ParsedArgs& a) {
  long cores = ::sysconf(_SC_NPROCESSORS_ONLN);
  int jobs = static_cast<int>(cores > 0 ? cores : 1);
  if (a.has("jobs")) {
    auto n = parse_int(a.get("jobs"));
    if (!n || *n < 1 || *n > 256) throw UsageError("invalid --jobs \"" + a.get("jobs") + "\"");
    jobs = static_cast<int>(*n);
  }
  return jobs;
}

std::vector<probe::SuiteResult> run_children(const Globals& g,
                                             const std::vector<ChildProbe>& children, int jobs) {
  std::string work = g.state_root + "-probes-" + std::to_string(::getpid());
  mkdir_p(work, 0700);
  std::vector<probe::SuiteResult> suites(children.size());
  std::map<pid_t, size_t> running;
  size_t next = 0;
  auto report_of = [&](size_t i) { return work + "/" + std::to_string(i) + ".json"; };
  auto log_of = [&](size_t i) { return work + "/" + std::to_string(i) + ".log"; };
  while (next < children.size() || !running.empty()) {
    while (next < children.size() && static_cast<int>(running.size()) < jobs &&
           !engine::OsContainer::interrupted()) {
      size_t i = next++;
      if (!g.quiet)
        std::fprintf(stderr, "postroj: [%zu/%zu] %s\n", i + 1, children.size(),
                     children[i].what.c_str());
      running[spawn(child_argv(g, children[i], report_of(i)), log_of(i))] = i;
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
    suites[i] = suite_of(children[i], report_of(i), log_of(i), status);
  }
  remove_tree(work);
  return suites;
}

}  // namespace racker::cli::postroj
