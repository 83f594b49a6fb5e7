// pkgprobe: a catalog image booted in a fresh OS container on a private network, packages
// copied in and installed with the distribution's own package manager (so dependencies
// resolve), then unit checks (enable --now, `active` within a deadline) and network checks
// (from inside the container's network namespace), then teardown. Also the built-in
// selftests. Every step becomes one check of a SuiteResult.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "engine/rootless.hpp"
#include "probe/acquire.hpp"
#include "probe/catalog.hpp"
#include "probe/fetch.hpp"
#include "probe/report.hpp"

namespace racker::probe {

struct ProbeEnv {
  std::string store_root = engine::default_store_root();
  std::string state_root = engine::default_state_root();
  std::string package_cache = default_package_cache();
  std::string bake_cache;  // "" = <store root>/bake-cache
  std::string registries_conf;
  std::string download_cache;  // "" = default_download_cache()
  std::string arch;            // Debian architecture of the image ("" = this machine's)
  std::function<void(const std::string&)> on_status;  // progress lines for humans (stderr)
};

struct PkgprobeOptions {
  std::string label;
  std::vector<std::string> packages;      // URLs or paths
  std::vector<std::string> units;         // "nginx" or "nginx.service"
  std::vector<std::string> network_urls;  // http://, https://, tcp://
  std::vector<int> http_status;           // classes an http(s) answer must be in; {}: any
  int network_timeout_s = 30;
  int timeout_s = 60;  // per unit: enable --now until active
  int install_timeout_s = 900;
  int boot_timeout_s = 60;
  bool keep = false;
};

struct PkgprobeOutcome {
  SuiteResult suite;
  std::string kept_container;  // the container's name with --keep ("" otherwise)
  double teardown_seconds = 0;
};

// Checks the arguments (labels, package arguments, URLs) without doing anything; throws
// racker::Error (EINVAL/ENOENT) naming the bad one.
void validate_pkgprobe(const Catalog& catalog, const PkgprobeOptions& o);

// What acquire_image needs of a probe's environment.
AcquireOptions acquire_options(const ProbeEnv& env);

// Never throws for check failures: they end up in the suite (later checks skipped).
PkgprobeOutcome run_pkgprobe(const Catalog& catalog, const PkgprobeOptions& o, const ProbeEnv& env);

// selftest hostnamectl: boot, run hostnamectl, require the container's hostname and a
// "Virtualization:" line.
SuiteResult selftest_hostnamectl(const Catalog& catalog, const std::string& label,
                                 const ProbeEnv& env);

// The command line that installs files with a package manager (apt, dnf, yum, microdnf,
// zypper, pacman); throws racker::Error for others.
std::vector<std::string> install_command(const std::string& package_manager,
                                         const std::vector<std::string>& files);
// The last n lines of text (without a trailing newline).
std::string last_lines(const std::string& text, size_t n);

}  // namespace racker::probe
