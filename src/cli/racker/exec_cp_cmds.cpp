// racker exec and racker cp (engine/exec_cp.hpp).
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>

#include "base/error.hpp"
#include "base/log.hpp"
#include "cli/args.hpp"
#include "cli/racker/cli_util.hpp"
#include "cli/racker/commands.hpp"
#include "engine/exec_cp.hpp"
#include "engine/run.hpp"

namespace racker::cli {
namespace {

const std::vector<OptionSpec> kExecOpts = {
    {"interactive", 'i', false, false, "keep stdin open"},
    {"tty", 't', false, false,
     "allocate a pseudo-TTY (not with -i when stdin is a pipe or file, as racker run)"},
    {"detach", 'd', false, false, "run the command in the background"},
    {"env", 'e', true, true, "set an environment variable KEY=VALUE"},
    {"workdir", 'w', true, false, "working directory in the container"},
    {"user", 'u', true, false, "uid[:gid] or name[:group]"},
    {"help", 'h', false, false, "show help"},
};

}  // namespace

int cmd_exec(const std::vector<std::string>& args, const RackerGlobals& g) {
  ParsedArgs a = parse_args(args, kExecOpts, true);
  if (a.flag("help")) {
    std::printf(
        "usage: racker exec [options] CONTAINER COMMAND [ARG...]\n\n"
        "Runs a command in a running container.\n\noptions:\n%s",
        options_help(kExecOpts).c_str());
    return 0;
  }
  if (a.positional.empty())
    throw Error("exec: missing CONTAINER (see racker exec --help)", EINVAL, ErrorKind::invalid);
  if (a.positional.size() < 2)
    throw Error("exec: missing COMMAND (see racker exec --help)", EINVAL, ErrorKind::invalid);
  engine::ExecRequest req;
  req.container = a.positional[0];
  req.args.assign(a.positional.begin() + 1, a.positional.end());
  for (auto& e : a.all("env")) {
    if (e.find('=') == std::string::npos) {
      const char* v = std::getenv(e.c_str());
      if (v) req.env.push_back(e + "=" + v);
      continue;
    }
    req.env.push_back(e);
  }
  req.workdir = a.get("workdir");
  req.user = a.get("user");
  req.interactive = a.flag("interactive");
  req.tty = a.flag("tty");
  req.detach = a.flag("detach");
  if (req.tty && req.interactive && !req.detach && !::isatty(0)) {
    log::debug("stdin is not a terminal: running without a pseudo-TTY, as with -i alone");
    req.tty = false;
  }
  if (req.interactive && !req.tty) share_stdin_pipe();
  req.store_root = g.root;
  return engine::exec_in_container(req);
}

int cmd_cp(const std::vector<std::string>& args, const RackerGlobals& g) {
  const std::vector<OptionSpec> opts = {{"help", 'h', false, false, "show help"}};
  auto a = parse_args(args, opts);
  if (a.flag("help")) {
    std::printf(
        "usage: racker cp CONTAINER:SRC_PATH DEST_PATH\n"
        "       racker cp SRC_PATH CONTAINER:DEST_PATH\n\n"
        "Copies a file or directory tree between a container and the host, keeping modes and\n"
        "mtimes. An existing directory as DEST receives SRC's basename; SRC/. copies the\n"
        "directory's contents. Works on stopped containers too.\n");
    return 0;
  }
  if (a.positional.size() != 2)
    throw Error("cp: needs SRC and DEST (see racker cp --help)", EINVAL);
  engine::CopyRequest req;
  req.src = a.positional[0];
  req.dst = a.positional[1];
  req.store_root = g.root;
  engine::copy_files(req);
  return 0;
}

}  // namespace racker::cli
