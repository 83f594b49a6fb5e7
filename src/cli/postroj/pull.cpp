// postroj pull: bake or pull catalog images and provision them; one failure does not stop
// the others; a summary at the end.
#include <chrono>
#include <cstdio>

#include "base/strings.hpp"
#include "cli/postroj/commands.hpp"
#include "probe/acquire.hpp"

namespace racker::cli::postroj {

int cmd_pull(const std::vector<std::string>& args, Globals& g) {
  auto a = parse_command(args,
                         {{"all", 0, false, false, "every image of the catalog"},
                          {"force", 0, false, false, "bake/pull and provision again"}},
                         "pull LABEL...|--all [--force]",
                         "Acquires catalog images (baked with mmdebstrap or pulled from their\n"
                         "registry), provisions systemd where missing and stores them as\n"
                         "postroj.local/LABEL in racker's store.\n\n",
                         0, SIZE_MAX, g);
  auto catalog = probe::Catalog::load(g.catalog);
  std::vector<std::string> labels = a.positional;
  if (a.flag("all")) {
    if (!labels.empty()) throw UsageError("pull: give labels or --all, not both");
    for (auto& e : catalog.entries()) labels.push_back(e.label);
  }
  if (labels.empty()) throw UsageError("usage: postroj pull LABEL...|--all [--force]");
  for (auto& l : labels) catalog.at(l);  // unknown labels are usage errors, before any work

  probe::AcquireOptions o = probe::acquire_options(probe_env(g));
  o.force = a.flag("force");

  struct Row {
    std::string label, result;
    bool ok;
    double seconds;
  };
  std::vector<Row> rows;
  for (auto& l : labels) {
    auto t0 = std::chrono::steady_clock::now();
    Row r{l, "", false, 0};
    try {
      auto rec = probe::acquire_image(catalog.at(l), o);
      r.ok = true;
      r.result = probe::image_name_for(catalog.at(l).label, g.arch) + " " + rec.id.substr(7, 12);
    } catch (const Error& e) {
      r.result = e.what();
      std::fprintf(stderr, "postroj: pull %s\n", printable(e.what(), true).c_str());
    }
    r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    rows.push_back(r);
  }
  int failed = 0;
  out("summary:\n");
  for (auto& r : rows) {
    char line[96];
    std::snprintf(line, sizeof line, "  %-6s %-22s %7.1f s  ", r.ok ? "ok" : "FAILED",
                  r.label.c_str(), r.seconds);
    out(line + r.result + "\n");
    failed += !r.ok;
  }
  out(std::to_string(rows.size() - failed) + " of " + std::to_string(rows.size()) +
      " images ready\n");
  return failed ? 1 : 0;
}

}  // namespace racker::cli::postroj
