// postroj's commands, one file each; main.cpp parses the global options and dispatches.
#pragma once

#include <string>
#include <vector>

#include "base/error.hpp"
#include "cli/args.hpp"
#include "engine/rootless.hpp"
#include "probe/catalog.hpp"
#include "probe/pkgprobe.hpp"

namespace racker::cli::postroj {

// Wrong command line: exit status 2.
class UsageError : public Error {
 public:
  explicit UsageError(const std::string& m) : Error(m, EINVAL) {}
};

struct Globals {
  std::string store_root = engine::default_store_root();
  std::string state_root = engine::default_state_root();
  std::string catalog;  // "" = $POSTROJ_CATALOG or built-in
  std::string bake_cache;
  std::string package_cache = probe::default_package_cache();
  std::string registries_conf;
  std::string download_cache;  // "" = probe::default_download_cache()
  std::string arch;            // Debian architecture of the images ("" = this machine's)
  bool quiet = false;
};

// The options every command accepts, before or after its name.
const std::vector<OptionSpec>& global_options();
// Applies global options found in a (a command's or main's parse) to g.
void apply_globals(const ParsedArgs& a, Globals& g);

// Parses a command's arguments with its own options plus the global ones; --help prints
// usage and exits 0; wrong options or positional counts throw UsageError.
ParsedArgs parse_command(const std::vector<std::string>& args, std::vector<OptionSpec> specs,
                         const std::string& usage, const std::string& description, size_t min_pos,
                         size_t max_pos, Globals& g);

probe::ProbeEnv probe_env(const Globals& g);
// Seconds from an option value: a positive integer; UsageError naming the option otherwise.
int seconds_option(const ParsedArgs& a, const std::string& name, int def);
void out(const std::string& s);

// A probe run as a child process: `postroj GLOBALS args --report=json:FILE`, its suite
// renamed name (image: the label it probes; what: its progress line).
struct ChildProbe {
  std::string image;
  std::string name;
  std::string what;
  std::vector<std::string> args;
};
// Runs the children, jobs at a time; returns their suites in order (a child that never
// started, after an interrupt, has an empty suite name).
std::vector<probe::SuiteResult> run_children(const Globals& g,
                                             const std::vector<ChildProbe>& children, int jobs);
// --jobs N (1..256), default the number of cores.
int jobs_option(const ParsedArgs& a);

int cmd_list_images(const std::vector<std::string>& args, Globals& g);
int cmd_pull(const std::vector<std::string>& args, Globals& g);
int cmd_pkgprobe(const std::vector<std::string>& args, Globals& g);
int cmd_selftest(const std::vector<std::string>& args, Globals& g);
int cmd_matrix(const std::vector<std::string>& args, Globals& g);

}  // namespace racker::cli::postroj
