// racker: the docker-like front end. Parses global options and dispatches to one command.
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <map>

#include "base/error.hpp"
#include "base/log.hpp"
#include "base/strings.hpp"
#include "cli/args.hpp"
#include "cli/racker/commands.hpp"
#include "engine/monitor.hpp"
#include "engine/ports.hpp"
#include "engine/rootless.hpp"
#include "engine/run.hpp"

using namespace racker;

namespace {

using Fn = std::function<int(const std::vector<std::string>&, const cli::RackerGlobals&)>;

const std::vector<cli::OptionSpec> kGlobal = {
    {"root", 0, true, false,
     "image and container store (default /var/lib/racker; an ordinary user's "
     "$XDG_DATA_HOME/racker or ~/.local/share/racker; $RACKER_ROOT)"},
    {"registries-conf", 0, true, false,
     "registries.conf to use ($RACKER_REGISTRIES_CONF; default /etc/containers/...)"},
    {"authfile", 0, true, false, "credentials file (default: containers auth.json)"},
    {"cert-dir", 0, true, false, "CA certificates per registry: DIR/HOST[:PORT]/*.crt"},
    {"debug", 0, false, false, "debug logging"},
    {"verbose", 0, false, false, "what racker does, step by step (the original's; as --debug)"},
    {"version", 'v', false, false, "print the version"},
    {"help", 'h', false, false, "show help"},
};

void usage() {
  std::printf(
      "racker: operating system containers for humans and machines\n\n"
      "usage: racker [global options] command [options] [arguments...]\n\n"
      "commands:\n"
      "  pull        pull an image from a registry\n"
      "  images      list images\n"
      "  rmi         remove images\n"
      "  tag         give an image another name\n"
      "  image       inspect | ls | rm | prune | pull\n"
      "  push        push an image to a registry\n"
      "  login       log in to a registry\n"
      "  logout      log out of a registry\n"
      "  run         run a command in a new container (racker run --help)\n"
      "  create      make a container without starting it\n"
      "  start       start created or exited containers\n"
      "  load        load images from a docker-archive, OCI archive or OCI layout\n"
      "  save        save images to a docker-archive, OCI archive or OCI layout\n"
      "  bake        build an OS image (debian, ubuntu) with mmdebstrap\n"
      "  ps          list containers\n"
      "  logs        show a detached container's output\n"
      "  stop        stop containers (SIGTERM, then SIGKILL)\n"
      "  kill        send a signal to containers\n"
      "  rm          remove containers\n"
      "  inspect     show a container as JSON\n"
      "  port        list a container's published ports (-p)\n"
      "  exec        run a command in a running container\n"
      "  cp          copy files between a container and the host\n\n"
      "as an ordinary user (rootless): a store of your own and one user namespace with your\n"
      "subordinate ids (/etc/subuid, /etc/subgid; newuidmap from uidmap), held by a pause\n"
      "process; private networks through pasta (passt). Booted OS containers and limits need\n"
      "a cgroup delegated to you (your systemd user session, or systemd-run --user --scope).\n\n"
      "global options:\n%s",
      cli::options_help(kGlobal).c_str());
}

}  // namespace

int main(int argc, char** argv) {
  ::signal(SIGPIPE, SIG_IGN);
  std::vector<std::string> args(argv + 1, argv + argc);
  // run, create, start and exec answer as docker's do: 125 for racker's own failures,
  // 126/127 when the payload cannot be started; every other command 1
  ExitStyle style = ExitStyle::plain;
  try {
    auto g = cli::parse_args(args, kGlobal);
    if (g.flag("version")) {
      std::printf("racker version %s\n", RACKER_VERSION);
      return 0;
    }
    if (g.positional.empty() || g.flag("help")) {
      usage();
      return g.positional.empty() && !g.flag("help") ? 1 : 0;
    }
    log::configure("", log::Format::text, g.flag("debug") || g.flag("verbose"));
    // an ordinary user's racker runs as root of the user's own namespaces (engine/rootless)
    if (::geteuid() != 0) engine::enter_rootless_namespaces();
    cli::RackerGlobals globals;
    const char* env_root = std::getenv("RACKER_ROOT");
    globals.root = g.has("root") ? g.get("root")
                   : env_root    ? std::string(env_root)
                                 : engine::default_store_root();
    globals.registries_conf = g.get("registries-conf");
    globals.authfile = g.get("authfile");
    globals.certs_dir = g.get("cert-dir");
    std::string verb = g.positional[0];
    if (verb == "run" || verb == "create" || verb == "start" || verb == "exec")
      style = ExitStyle::payload;
    std::vector<std::string> rest(g.positional.begin() + 1, g.positional.end());
    if (verb == "image" && !rest.empty()) {
      std::string sub = rest[0];
      rest.erase(rest.begin());
      if (sub == "inspect") return cli::cmd_image_inspect(rest, globals);
      if (sub == "prune") return cli::cmd_image_prune(rest, globals);
      if (sub == "ls" || sub == "list") return cli::cmd_images(rest, globals);
      if (sub == "rm") return cli::cmd_rmi(rest, globals);
      if (sub == "pull") return cli::cmd_pull(rest, globals);
      throw Error("unknown command \"image " + sub + "\" (see racker --help)", EINVAL);
    }
    if (verb == "container" && (rest.size() == 7 || rest.size() == 9) && rest[0] == "monitor" &&
        rest[1] == "--state-root" && rest[3] == "--parent" &&
        (rest[5] == "--rm" || rest[5] == "--keep") &&
        (rest.size() == 7 || (rest[6] == "--then" && (rest[7] == "hand" || rest[7] == "gone")))) {
      // internal: started by racker run (engine/monitor.hpp): its pipe is fd 3, or, with
      // --then, its watcher saw racker hand the container over or go
      auto parent = parse_int(rest[4]);
      if (!parent || *parent <= 0) throw Error("container monitor: bad --parent", EINVAL);
      std::string then = rest.size() == 9 ? rest[7] : "";
      return engine::monitor_main(3, static_cast<pid_t>(*parent), globals.root, rest[2],
                                  rest.back(), rest[5] == "--rm", then);
    }
    if (verb == "container" && rest.size() >= 4 && rest[0] == "port-proxy") {
      // internal: started by -p (engine/ports.hpp), its status pipe is fd 3, sockets from 4
      return engine::port_proxy_main(3, rest[1], rest[2], {rest.begin() + 3, rest.end()});
    }
    static const std::map<std::string, Fn> kCommands = {
        {"run", cli::cmd_run},       {"pull", cli::cmd_pull},       {"images", cli::cmd_images},
        {"rmi", cli::cmd_rmi},       {"tag", cli::cmd_tag},         {"login", cli::cmd_login},
        {"logout", cli::cmd_logout}, {"push", cli::cmd_push},       {"load", cli::cmd_load},
        {"save", cli::cmd_save},     {"bake", cli::cmd_bake},       {"ps", cli::cmd_ps},
        {"logs", cli::cmd_logs},     {"stop", cli::cmd_stop},       {"kill", cli::cmd_kill},
        {"rm", cli::cmd_rm},         {"inspect", cli::cmd_inspect}, {"exec", cli::cmd_exec},
        {"cp", cli::cmd_cp},         {"create", cli::cmd_create},   {"start", cli::cmd_start},
        {"port", cli::cmd_port}};
    auto it = kCommands.find(verb);
    if (it != kCommands.end()) return it->second(rest, globals);
    throw Error("unknown command \"" + verb + "\" (see racker --help)", EINVAL);
  } catch (const Error& e) {
    std::fprintf(stderr, "racker: %s\n", printable(e.what(), true).c_str());
    return exit_status(e, style);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "racker: %s\n", printable(e.what(), true).c_str());
    return exit_status(Error(e.what()), style);
  }
}
