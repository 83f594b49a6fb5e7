// racker-oci: the OCI runtime with runc's command line. Parses global options, then hands
// the verb to commands.cpp. Every failure is one line on stderr and exit status 1.
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "base/error.hpp"
#include "base/log.hpp"
#include "base/strings.hpp"
#include "cli/args.hpp"
#include "cli/racker-oci/commands.hpp"
#include "cli/racker-oci/reexec.hpp"

using namespace racker;

namespace {

const std::vector<cli::OptionSpec> kGlobal = {
    {"root", 0, true, false,
     "state directory (default /run/racker-oci; as an ordinary user $XDG_RUNTIME_DIR/racker-oci, "
     "else /tmp/racker-oci-UID)"},
    {"log", 0, true, false, "log file (default stderr)"},
    {"log-format", 0, true, false, "log format: text or json"},
    {"debug", 0, false, false, "debug logging"},
    {"systemd-cgroup", 0, false, false,
     "cgroups through systemd: a transient scope (cgroupsPath slice:prefix:name); cgroupfs where "
     "systemd does not run"},
    {"criu", 0, true, false, "ignored (checkpointing is not supported)"},
    {"rootless", 0, true, false, "ignored (auto)"},
    {"version", 'v', false, false, "print the version"},
    {"help", 'h', false, false, "show help"},
};

void usage() {
  std::printf(
      "racker-oci: an OCI runtime with runc's command line\n\n"
      "usage: racker-oci [global options] command [command options] [arguments...]\n\n"
      "commands:\n%s\nglobal options:\n%s",
      cli::commands_help().c_str(), cli::options_help(kGlobal).c_str());
}

// runc's choice of state directory: root's under /run; an ordinary user's in the runtime
// directory of the session (its own tmpfs), else in a directory of its own under /tmp.
std::string default_root() {
  if (::geteuid() == 0) return "/run/racker-oci";
  const char* xdg = std::getenv("XDG_RUNTIME_DIR");
  if (xdg && *xdg == '/' && ::access(xdg, W_OK) == 0) return std::string(xdg) + "/racker-oci";
  return "/tmp/racker-oci-" + std::to_string(::geteuid());
}

}  // namespace

int main(int argc, char** argv) {
  ::signal(SIGPIPE, SIG_IGN);
  std::vector<std::string> args(argv + 1, argv + argc);
  cli::ParsedArgs g;
  try {
    g = cli::parse_args(args, kGlobal);
  } catch (const Error& e) {
    std::fprintf(stderr, "racker-oci: %s\n", printable(e.what(), true).c_str());
    return 1;
  }
  if (g.flag("version")) {
    std::printf("racker-oci version %s\nspec: 1.2.0\n", RACKER_VERSION);
    return 0;
  }
  if (g.positional.empty() || g.flag("help")) {
    usage();
    return g.positional.empty() && !g.flag("help") ? 1 : 0;
  }
  std::string fmt = g.get("log-format", "text");
  if (fmt != "text" && fmt != "json") {
    std::fprintf(stderr, "racker-oci: invalid --log-format \"%s\": use text or json\n",
                 fmt.c_str());
    return 1;
  }
  log::configure(g.get("log"), fmt == "json" ? log::Format::json : log::Format::text,
                 g.flag("debug"));
  std::string verb = g.positional[0];
  std::vector<std::string> rest(g.positional.begin() + 1, g.positional.end());
  if (!cli::is_command(verb)) {
    std::fprintf(stderr, "racker-oci: unknown command \"%s\" (see racker-oci --help)\n",
                 verb.c_str());
    return 1;
  }
  cli::GlobalOptions global;
  global.root = g.get("root", default_root());
  global.systemd_cgroup = g.flag("systemd-cgroup");
  try {
    if (cli::starts_processes(verb)) cli::reexec_from_sealed_copy(argv);
    return cli::run_command(verb, rest, global);
  } catch (const Error& e) {
    if (log::to_file()) log::error(e.what());
    std::fprintf(stderr, "racker-oci: %s\n", printable(e.what(), true).c_str());
    return 1;
  } catch (const std::exception& e) {
    if (log::to_file()) log::error(e.what());
    std::fprintf(stderr, "racker-oci: %s\n", printable(e.what(), true).c_str());
    return 1;
  }
}
