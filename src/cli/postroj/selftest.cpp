// postroj selftest: the built-in probes over the catalog (or the given images).
#include "cli/postroj/commands.hpp"
#include "engine/os_container.hpp"
#include "probe/report.hpp"

namespace racker::cli::postroj {

int cmd_selftest(const std::vector<std::string>& args, Globals& g) {
  auto a =
      parse_command(args,
                    {{"image", 0, true, true, "catalog label (repeatable; default: all)"},
                     {"jobs", 'j', true, false,
                      "images at a time, each probed by a postroj process of its own "
                      "(default: the number of cores)"},
                     {"report", 0, true, true, "junit:FILE or json:FILE (repeatable)"}},
                    "selftest hostnamectl|pkgprobe [--image=LABEL]... [--jobs N] [--report=...]",
                    "hostnamectl: boots each image and requires hostnamectl to show the\n"
                    "container's hostname and a \"Virtualization:\" line.\n"
                    "pkgprobe: a pkgprobe of each image with --check-unit=systemd-journald.\n"
                    "Images that are not in the store yet are baked or pulled first.\n"
                    "Exit status: 0 when every image passed, 1 when one failed, 2 for usage\n"
                    "errors, 128+N after signal N (Ctrl-C) with the containers torn down.\n\n",
                    1, 1, g);
  std::string which = a.positional[0];
  if (which != "hostnamectl" && which != "pkgprobe")
    throw UsageError("unknown selftest \"" + which + "\" (hostnamectl or pkgprobe)");
  std::vector<probe::ReportSpec> reports;
  try {
    for (auto& r : a.all("report")) reports.push_back(probe::parse_report_spec(r));
  } catch (const Error& e) {
    throw UsageError(e.what());
  }
  auto catalog = probe::Catalog::load(g.catalog);
  std::vector<std::string> labels = a.all("image");
  if (labels.empty())
    for (auto& e : catalog.entries()) labels.push_back(e.label);
  for (auto& l : labels) catalog.at(l);
  int jobs = jobs_option(a);
  auto env = probe_env(g);
  probe::Report report;
  if (jobs > 1 && labels.size() > 1) {
    // each image in a postroj of its own: a selftest of that one image, in process
    std::vector<ChildProbe> children;
    for (auto& l : labels)
      children.push_back(
          {l, "", "selftest " + which + " " + l, {"selftest", which, "--image=" + l, "--jobs=1"}});
    for (auto& s : run_children(g, children, jobs))
      if (!s.name.empty()) report.suites.push_back(s);
  } else {
    for (auto& l : labels) {
      if (engine::OsContainer::interrupted()) break;
      if (which == "hostnamectl") {
        report.suites.push_back(probe::selftest_hostnamectl(catalog, l, env));
      } else {
        probe::PkgprobeOptions o;
        o.label = l;
        o.units = {"systemd-journald"};
        report.suites.push_back(probe::run_pkgprobe(catalog, o, env).suite);
      }
    }
  }
  out(probe::to_human(report));
  int passed = 0;
  for (auto& s : report.suites) passed += s.passed();
  out("selftest " + which + ": " + std::to_string(passed) + " of " +
      std::to_string(report.suites.size()) + " images passed\n");
  for (auto& spec : reports) probe::write_report(report, spec);
  if (int sig = engine::OsContainer::interrupted()) return 128 + sig;
  return report.passed() ? 0 : 1;
}

}  // namespace racker::cli::postroj
