#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "base/error.hpp"
#include "engine/package_managers.hpp"

using racker::Error;
using namespace racker::engine;

TEST(PackageManagers, LookedForInOrder) {
  std::vector<std::string> names;
  for (auto& m : package_managers()) {
    names.push_back(m.name);
    EXPECT_TRUE(m.detect.starts_with("/usr/bin/")) << m.name;
    EXPECT_FALSE(m.systemd.empty()) << m.name;
    EXPECT_NE(m.provision.find("{packages}"), std::string::npos) << m.name;
    EXPECT_FALSE(m.refresh.empty()) << m.name;
    EXPECT_FALSE(m.install_files.empty()) << m.name;
  }
  // a Fedora image may have both dnf and microdnf: dnf wins
  EXPECT_EQ(names, (std::vector<std::string>{"apt", "dnf", "microdnf", "yum", "zypper", "pacman"}));
  EXPECT_EQ(package_manager_names(), "apt, dnf, microdnf, yum, zypper, pacman");
}

TEST(PackageManagers, ProvisionScripts) {
  EXPECT_EQ(provision_script(package_manager("apt"), {"curl"}),
            "set -e; export DEBIAN_FRONTEND=noninteractive; apt-get update -q; apt-get install -y "
            "-q --no-install-recommends systemd systemd-sysv dbus curl; apt-get clean");
  EXPECT_EQ(provision_script(package_manager("dnf"), {}),
            "set -e; dnf install -y systemd; dnf clean all");
  EXPECT_EQ(provision_script(package_manager("pacman"), {}),
            "set -e; pacman -Sy --noconfirm --needed systemd; pacman -Scc --noconfirm");
  EXPECT_EQ(package_manager("zypper").refresh, "zypper --non-interactive refresh");
  try {
    package_manager("emerge");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(),
                 "unknown package manager \"emerge\" (apt, dnf, microdnf, yum, zypper, pacman)");
  }
}
