// postroj list-images: the catalog, with whether each image is in the store.
#include <cstdio>

#include <nlohmann/json.hpp>

#include "cli/postroj/commands.hpp"
#include "probe/acquire.hpp"

namespace racker::cli::postroj {

int cmd_list_images(const std::vector<std::string>& args, Globals& g) {
  auto a = parse_command(args, {{"format", 0, true, false, "table (default) or json"}},
                         "list-images [--format json|table]",
                         "The curated OS images postroj knows: label, source (a bake recipe or a\n"
                         "registry reference), family, package manager, and whether the image is\n"
                         "ready in the store.\n\n",
                         0, 0, g);
  std::string fmt = a.get("format", "table");
  if (fmt != "table" && fmt != "json")
    throw UsageError("invalid --format \"" + fmt + "\": use table or json");
  auto catalog = probe::Catalog::load(g.catalog);
  if (fmt == "json") {
    nlohmann::json arr = nlohmann::json::array();
    for (auto& e : catalog.entries()) {
      nlohmann::json source;
      if (e.baked()) {
        source["bake"] = {{"distro", e.bake_distro}};
        if (!e.bake_suite.empty()) source["bake"]["suite"] = e.bake_suite;
        if (!e.bake_mirror.empty()) source["bake"]["mirror"] = e.bake_mirror;
      } else {
        source["image"] = e.image_ref;
      }
      arr.push_back({{"label", e.label},
                     {"source", source},
                     {"family", e.family},
                     {"package_manager", e.package_manager},
                     {"aliases", e.aliases},
                     {"image", probe::image_name_for(e.label)},
                     {"present", probe::find_ready_image(g.store_root, e).has_value()}});
    }
    out(arr.dump(2) + "\n");
    return 0;
  }
  char line[512];
  std::snprintf(line, sizeof line, "%-22s %-8s %-9s %-8s %s\n", "LABEL", "FAMILY", "PKG-MGR",
                "PRESENT", "SOURCE");
  out(line);
  for (auto& e : catalog.entries()) {
    bool present = probe::find_ready_image(g.store_root, e).has_value();
    std::snprintf(line, sizeof line, "%-22s %-8s %-9s %-8s %s\n", e.label.c_str(), e.family.c_str(),
                  e.package_manager.c_str(), present ? "yes" : "no", e.source_text().c_str());
    out(line);
  }
  return 0;
}

}  // namespace racker::cli::postroj
