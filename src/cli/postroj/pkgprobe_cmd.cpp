// postroj pkgprobe: one probe of packages in a freshly booted OS container.
#include <cstdio>

#include "cli/postroj/commands.hpp"
#include "probe/netcheck.hpp"
#include "probe/report.hpp"

namespace racker::cli::postroj {

int cmd_pkgprobe(const std::vector<std::string>& args, Globals& g) {
  auto a = parse_command(
      args,
      {{"image", 0, true, false, "catalog label of the OS to boot (postroj list-images)"},
       {"package", 0, true, true, "package file or http(s) URL to install (repeatable)"},
       {"check-unit", 0, true, true, "systemd unit that must become active (repeatable)"},
       {"check-network", 0, true, true,
        "http://, https:// or tcp://HOST:PORT that must answer from inside (repeatable)"},
       {"http-status", 0, true, false,
        "status classes an http(s) check must answer with, e.g. 2xx,3xx (default: any "
        "answer, as the original postroj)"},
       {"network-timeout", 0, true, false, "seconds to retry each network check (default 30)"},
       {"timeout", 0, true, false, "seconds for each unit to become active (default 60)"},
       {"report", 0, true, true, "junit:FILE or json:FILE (repeatable)"},
       {"keep", 0, false, false, "leave the container running and print its name"}},
      "pkgprobe --image=LABEL [--package=URL|PATH]... [--check-unit=UNIT]...\n"
      "         [--check-network=URL]... [--http-status=2xx,3xx] [--network-timeout=S]\n"
      "         [--timeout=S]\n"
      "         [--report=junit:FILE|json:FILE] [--keep]",
      "Boots the image's systemd in a new container on a private network, installs the\n"
      "packages with the distribution's package manager (dependencies resolve from its\n"
      "archive), enables and starts each unit and requires `active`, and requires each URL\n"
      "to answer (TCP connect; for http(s) any HTTP status, or one of --http-status) from\n"
      "inside the container.\n"
      "Package URLs are downloaded on the host into the package cache (resumable).\n"
      "Exit status: 0 when every check passed, 1 when one failed, 2 for usage errors.\n\n",
      0, 0, g);
  if (!a.has("image")) throw UsageError("pkgprobe needs --image=LABEL (see postroj list-images)");
  probe::PkgprobeOptions o;
  o.label = a.get("image");
  o.packages = a.all("package");
  o.units = a.all("check-unit");
  o.network_urls = a.all("check-network");
  if (a.has("http-status")) {
    try {
      o.http_status = probe::parse_status_classes(a.get("http-status"));
    } catch (const Error& e) {
      throw UsageError(e.what());
    }
  }
  o.timeout_s = seconds_option(a, "timeout", 60);
  o.network_timeout_s = seconds_option(a, "network-timeout", 30);
  o.keep = a.flag("keep");
  std::vector<probe::ReportSpec> reports;
  try {
    for (auto& r : a.all("report")) reports.push_back(probe::parse_report_spec(r));
  } catch (const Error& e) {
    throw UsageError(e.what());
  }
  auto catalog = probe::Catalog::load(g.catalog);
  probe::validate_pkgprobe(catalog, o);

  auto res = probe::run_pkgprobe(catalog, o, probe_env(g));
  probe::Report report;
  report.suites.push_back(res.suite);
  out(probe::to_human(report));
  if (res.teardown_seconds > 0 && res.kept_container.empty()) {
    char line[64];
    std::snprintf(line, sizeof line, "  teardown %.0f ms\n", res.teardown_seconds * 1000);
    out(line);
  }
  if (!res.kept_container.empty())
    out("kept container " + res.kept_container + " (racker --root " + g.store_root + " rm -f " +
        res.kept_container + " removes it)\n");
  for (auto& spec : reports) probe::write_report(report, spec);
  return report.passed() ? 0 : 1;
}

}  // namespace racker::cli::postroj
