// The distributions' package managers as data (data/provision/package_managers.json, compiled
// in): how each is found in an image, what an image needs to boot with systemd, and the
// commands provisioning and pkgprobe run with it.
#pragma once

#include <string>
#include <vector>

namespace racker::engine {

struct PackageManager {
  std::string name;                        // "apt"
  std::string detect;                      // its executable in an image: "/usr/bin/apt-get"
  std::vector<std::string> systemd;        // packages a booting image needs
  std::string provision;                   // shell script; {packages} is replaced
  std::string refresh;                     // shell command: fresh package lists
  std::vector<std::string> install_files;  // argv before the package files
};

// All of them, in the order they are looked for in an image.
const std::vector<PackageManager>& package_managers();
// By name; throws racker::Error (EINVAL) naming the known ones.
const PackageManager& package_manager(const std::string& name);
// "apt, dnf, microdnf, yum, zypper, pacman" (for messages).
std::string package_manager_names();
// The provision script installing systemd's packages and extra ones.
std::string provision_script(const PackageManager& pm, const std::vector<std::string>& extra);

}  // namespace racker::engine
