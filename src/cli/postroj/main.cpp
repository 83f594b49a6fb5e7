// postroj: package acceptance testing in OS containers. Parses the global options and
// dispatches to one command (one file each).
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <functional>
#include <map>

#include "base/error.hpp"
#include "base/log.hpp"
#include "base/strings.hpp"
#include "cli/postroj/commands.hpp"
#include "engine/os_container.hpp"

using namespace racker;
using namespace racker::cli::postroj;

namespace {

void usage() {
  std::vector<cli::OptionSpec> top = global_options();
  top.push_back({"debug", 0, false, false, "debug logging"});
  top.push_back({"verbose", 0, false, false, "as --debug (the original racker's option)"});
  top.push_back({"version", 'v', false, false, "print the version"});
  top.push_back({"help", 'h', false, false, "show help"});
  out("postroj: package acceptance testing in OS containers\n\n"
      "usage: postroj [global options] command [options] [arguments...]\n\n"
      "commands:\n"
      "  list-images   the curated catalog of OS images\n"
      "  pull          bake or pull catalog images and provision systemd\n"
      "  pkgprobe      install packages in a booted OS and check units and ports\n"
      "  selftest      built-in probes over the catalog (hostnamectl, pkgprobe)\n"
      "  matrix        images x probes from a file, in parallel, sharded, one report\n\n"
      "`postroj COMMAND --help` shows a command's options.\n\n"
      "global options:\n" +
      cli::options_help(top));
}

}  // namespace

int main(int argc, char** argv) {
  ::signal(SIGPIPE, SIG_IGN);
  std::vector<std::string> args(argv + 1, argv + argc);
  try {
    auto specs = global_options();
    specs.push_back({"debug", 0, false, false, ""});
    specs.push_back({"verbose", 0, false, false, ""});
    specs.push_back({"version", 'v', false, false, ""});
    specs.push_back({"help", 'h', false, false, ""});
    cli::ParsedArgs g;
    try {
      g = cli::parse_args(args, specs, true);
    } catch (const Error& e) {
      throw UsageError(std::string(e.what()) + " (see postroj --help)");
    }
    if (g.flag("version")) {
      out(std::string("postroj version ") + RACKER_VERSION + "\n");
      return 0;
    }
    if (g.flag("help")) {
      usage();
      return 0;
    }
    // the verb is the first argument that parse_args did not consume
    size_t consumed = 0;
    for (size_t i = 0; i < args.size(); ++i) {
      if (args[i] == "--") {
        consumed = i + 1;
        break;
      }
      if (args[i].size() < 2 || args[i][0] != '-') {
        consumed = i;
        break;
      }
      std::string body = args[i].substr(args[i][1] == '-' ? 2 : 1);
      if (body.find('=') == std::string::npos)
        for (auto& s : specs)
          if ((s.name == body || (body.size() == 1 && s.short_name == body[0])) && s.takes_value)
            ++i;
      consumed = i + 1;
    }
    if (consumed >= args.size()) {
      usage();
      return 2;
    }
    log::configure("", log::Format::text, g.flag("debug") || g.flag("verbose"));
    // an ordinary user's postroj works in the user's racker namespaces and store, as racker
    if (::geteuid() != 0) engine::enter_rootless_namespaces();
    Globals globals;
    if (const char* r = std::getenv("RACKER_ROOT"); r && *r) globals.store_root = r;
    apply_globals(g, globals);
    std::string verb = args[consumed];
    std::vector<std::string> rest(args.begin() + static_cast<long>(consumed) + 1, args.end());
    static const std::map<std::string,
                          std::function<int(const std::vector<std::string>&, Globals&)>>
        kCommands = {{"list-images", cmd_list_images},
                     {"pull", cmd_pull},
                     {"pkgprobe", cmd_pkgprobe},
                     {"selftest", cmd_selftest},
                     {"matrix", cmd_matrix}};
    auto it = kCommands.find(verb);
    if (it == kCommands.end())
      throw UsageError("unknown command \"" + verb + "\" (see postroj --help)");
    // Ctrl-C or a kill: the probe's containers go at once and are cleaned up on the way out
    engine::OsContainer::tear_down_on_signals();
    int rc = it->second(rest, globals);
    if (int sig = engine::OsContainer::interrupted()) {
      std::fprintf(stderr, "postroj: interrupted by signal %d; containers removed\n", sig);
      return 128 + sig;
    }
    return rc;
  } catch (const UsageError& e) {
    std::fprintf(stderr, "postroj: %s\n", printable(e.what(), true).c_str());
    return 2;
  } catch (const Error& e) {
    std::fprintf(stderr, "postroj: %s\n", printable(e.what(), true).c_str());
    if (int sig = engine::OsContainer::interrupted()) return 128 + sig;
    return exit_status(e, ExitStyle::plain);  // 128+N for a signal that ended a container
  } catch (const std::exception& e) {
    std::fprintf(stderr, "postroj: %s\n", printable(e.what(), true).c_str());
    return 1;
  }
}
