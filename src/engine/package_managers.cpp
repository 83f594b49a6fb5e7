#include "engine/package_managers.hpp"

#include <cerrno>

#include <nlohmann/json.hpp>

#include "base/error.hpp"

namespace racker::engine {

extern const char* const kPackageManagersData;  // generated from the data file

const std::vector<PackageManager>& package_managers() {
  static const std::vector<PackageManager> all = [] {
    std::vector<PackageManager> v;
    auto doc = nlohmann::json::parse(kPackageManagersData);
    for (auto& j : doc.at("package_managers")) {
      PackageManager m;
      m.name = j.at("name").get<std::string>();
      m.detect = j.at("detect").get<std::string>();
      m.systemd = j.at("systemd").get<std::vector<std::string>>();
      m.provision = j.at("provision").get<std::string>();
      m.refresh = j.at("refresh").get<std::string>();
      m.install_files = j.at("install_files").get<std::vector<std::string>>();
      v.push_back(std::move(m));
    }
    return v;
  }();
  return all;
}

std::string package_manager_names() {
  std::string names;
  for (auto& m : package_managers()) names += (names.empty() ? "" : ", ") + m.name;
  return names;
}

const PackageManager& package_manager(const std::string& name) {
  for (auto& m : package_managers())
    if (m.name == name) return m;
  throw Error("unknown package manager \"" + name + "\" (" + package_manager_names() + ")", EINVAL);
}

std::string provision_script(const PackageManager& pm, const std::vector<std::string>& extra) {
  std::string pkgs;
  for (auto& p : pm.systemd) pkgs += (pkgs.empty() ? "" : " ") + p;
  for (auto& p : extra) pkgs += (pkgs.empty() ? "" : " ") + p;
  std::string s = pm.provision;
  auto at = s.find("{packages}");
  if (at != std::string::npos) s.replace(at, 10, pkgs);
  return s;
}

}  // namespace racker::engine
