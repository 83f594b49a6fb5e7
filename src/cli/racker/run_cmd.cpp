// racker run: docker's flags mapped onto engine::RunRequest.
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <optional>

#include "base/error.hpp"
#include "base/fs.hpp"
#include "base/log.hpp"
#include "base/strings.hpp"
#include "cli/args.hpp"
#include "cli/racker/cli_util.hpp"
#include "cli/racker/commands.hpp"
#include "engine/run.hpp"
#include "image/image_store.hpp"
#include "probe/acquire.hpp"
#include "probe/catalog.hpp"

namespace racker::cli {

namespace {
const std::vector<OptionSpec> kRunOpts = {
    {"interactive", 'i', false, false, "keep stdin open"},
    {"tty", 't', false, false,
     "allocate a pseudo-TTY (not with -i when stdin is a pipe or file: that input goes to the "
     "command unchanged, as the original racker's `echo x | racker run -it ...` expects)"},
    {"rm", 0, false, false, "remove the container when it exits"},
    {"detach", 'd', false, false, "run in the background, print the container id"},
    {"name", 0, true, false, "container name"},
    {"env", 'e', true, true, "set an environment variable KEY=VALUE (or KEY from the host)"},
    {"env-file", 0, true, true, "read KEY=VALUE lines from a file"},
    {"volume", 'v', true, true, "bind mount SRC:DST[:ro]"},
    {"tmpfs", 0, true, true, "tmpfs mount DST[:options]"},
    {"workdir", 'w', true, false, "working directory in the container"},
    {"user", 'u', true, false, "uid[:gid] or name[:group]"},
    {"entrypoint", 0, true, false, "override the image's entrypoint (\"\" for none)"},
    {"hostname", 'h', true, false, "container hostname"},
    {"network", 0, true, false, "private (default: lo + NATed eth0 on racker0), none (lo), host"},
    {"publish", 'p', true, true,
     "publish a port of a private network: [IP:][HOSTPORT:]PORT[/tcp|/udp], ranges A-B; no "
     "HOSTPORT: any free one (racker port shows it)"},
    {"memory", 'm', true, false, "memory limit (e.g. 512m)"},
    {"cpus", 0, true, false, "number of CPUs (e.g. 1.5)"},
    {"pids-limit", 0, true, false, "maximum number of processes"},
    {"read-only", 0, false, false, "mount the root filesystem read-only"},
    {"cap-add", 0, true, true, "add a capability"},
    {"cap-drop", 0, true, true, "drop a capability"},
    {"privileged", 0, false, false,
     "all capabilities, all devices, no masked paths, no seccomp filter"},
    {"security-opt", 0, true, true,
     "seccomp=unconfined, seccomp=PROFILE.json (docker's format), no-new-privileges[=true|false]"},
    {"userns", 0, true, false,
     "auto (a user namespace with 65536 ids of its own; default for booted OS containers) or "
     "host (the host's ids; default otherwise)"},
    {"boot", 0, false, false,
     "boot the image's systemd, run COMMAND inside, then shut down (default for distribution "
     "images)"},
    {"no-boot", 0, false, false, "run COMMAND as the container's PID 1, never boot"},
    {"boot-timeout", 0, true, false, "seconds to wait for the booted system (default 30)"},
    {"init", 0, false, false,
     "run an init (tini) as PID 1 that forwards signals and reaps zombies"},
    {"platform", 0, true, false,
     "os/arch[/variant] to pull; another architecture runs through qemu-user "
     "(qemu-user-static, binfmt_misc)"},
    {"pull", 0, true, false, "always, missing (default) or never"},
    {"help", 0, false, false, "show help"},
};
}  // namespace

// --security-opt: docker's seccomp and no-new-privileges keys ("=" or the older ":"). A
// profile file is read and checked here, before anything of a container exists.
static void parse_security_opts(const std::vector<std::string>& opts, engine::RunFlags& f) {
  for (const std::string& opt : opts) {
    size_t sep = opt.find_first_of("=:");
    std::string key = opt.substr(0, sep);
    std::string value = sep == std::string::npos ? "" : opt.substr(sep + 1);
    if (key == "seccomp") {
      if (value.empty())
        throw Error(
            "invalid --security-opt \"" + opt + "\": seccomp needs unconfined or a profile file",
            EINVAL, ErrorKind::invalid);
      if (value == "unconfined") {
        f.seccomp = engine::SeccompChoice::unconfined();
      } else if (value == "builtin") {
        f.seccomp = {};
      } else {
        std::string path = value;
        if (path[0] != '/') {
          char cwd[4096];
          if (::getcwd(cwd, sizeof cwd)) path = std::string(cwd) + "/" + path;
        }
        f.seccomp = engine::load_seccomp_profile_file(path);
      }
    } else if (key == "no-new-privileges") {
      if (value.empty() || value == "true") {
        f.no_new_privileges = true;
      } else if (value == "false") {
        f.no_new_privileges = false;
      } else {
        throw Error("invalid --security-opt \"" + opt + "\": no-new-privileges takes true or false",
                    EINVAL, ErrorKind::invalid);
      }
    } else {
      throw Error("invalid --security-opt \"" + opt +
                      "\": use seccomp=unconfined, seccomp=PROFILE.json or "
                      "no-new-privileges[=true|false]",
                  EINVAL, ErrorKind::invalid);
    }
    f.security_opt.push_back(opt);
  }
}

static int run_impl(const std::vector<std::string>& args, const RackerGlobals& g);
static std::optional<engine::RunRequest> parse_run(const std::vector<std::string>& args,
                                                   const RackerGlobals& g, bool create);

// Every failure of racker itself (bad flag, reference, pull, setup) is docker's 125
// (main.cpp: ExitStyle::payload).
int cmd_run(const std::vector<std::string>& args, const RackerGlobals& g) {
  return run_impl(args, g);
}

// postroj's catalog labels (debian-bookworm, ...) name images too: baked or pulled and
// provisioned on first use, as `postroj pull LABEL` does
static void resolve_label(engine::RunRequest& req, const RackerGlobals& g) {
  if (req.image.find_first_of("/:@") != std::string::npos) return;
  if (image::ImageStore(g.root).find(req.image)) return;
  auto catalog = probe::Catalog::load();
  const probe::CatalogEntry* e = catalog.find(req.image);
  if (!e) return;
  probe::AcquireOptions a;
  a.store_root = g.root;
  a.registries_conf = g.registries_conf;
  a.on_status = [](const std::string& s) { std::fprintf(stderr, "%s\n", s.c_str()); };
  req.image = probe::acquire_image(*e, a).id;
}

static int run_impl(const std::vector<std::string>& args, const RackerGlobals& g) {
  auto req = parse_run(args, g, false);
  if (!req) return 0;
  resolve_label(*req, g);
  return engine::run_container(*req);
}

// racker create: run's flags; the container is made, not started (racker start).
int cmd_create(const std::vector<std::string>& args, const RackerGlobals& g) {
  auto req = parse_run(args, g, true);
  if (req) resolve_label(*req, g);
  if (req) std::printf("%s\n", engine::create_container(*req).c_str());
  return 0;
}

static std::optional<engine::RunRequest> parse_run(const std::vector<std::string>& args,
                                                   const RackerGlobals& g, bool create) {
  ParsedArgs a = parse_args(args, kRunOpts, true);
  if (a.flag("help") && create) {
    std::printf(
        "usage: racker create [options] IMAGE [COMMAND] [ARG...]\n\n"
        "Makes a container from IMAGE (pulled if missing) without starting it; prints its id.\n"
        "racker start [-a] runs it. Takes racker run's options (-d and --rm aside). An OS image\n"
        "boots on start: with -a its COMMAND runs inside and the system shuts down after it, as\n"
        "racker run does; without -a the system stays up in the background.\n\n"
        "options:\n%s",
        options_help(kRunOpts).c_str());
    return std::nullopt;
  }
  if (a.flag("help")) {
    std::printf(
        "usage: racker run [options] IMAGE [COMMAND] [ARG...]\n\n"
        "Runs a command in a new container from IMAGE (pulled if missing).\n"
        "OS containers: a distribution image (one with /etc/os-release and a package manager)\n"
        "boots its systemd as PID 1 and COMMAND (default: the image's Cmd) runs inside once the\n"
        "system is up; its exit status is racker's, then the system is shut down. An image\n"
        "without systemd gets it installed with its own package manager first (once; stored as\n"
        "racker.local/provisioned/...). --boot forces this, --no-boot runs COMMAND as PID 1.\n"
        "IMAGE may also be a label of postroj's catalog (postroj list-images), e.g.\n"
        "debian-bookworm: baked or pulled and provisioned on first use.\n"
        "-d without COMMAND boots an OS image in the background: racker exec runs commands in\n"
        "it, racker stop shuts it down (SIGRTMIN+3). -d with COMMAND runs it as PID 1.\n"
        "\n"
        "options:\n%s",
        options_help(kRunOpts).c_str());
    return std::nullopt;
  }
  const char* verb = create ? "create" : "run";
  if (a.positional.empty())
    throw Error(std::string(verb) + ": missing IMAGE (see racker " + verb + " --help)", EINVAL,
                ErrorKind::invalid);
  if (create && (a.flag("detach") || a.flag("rm")))
    throw Error("create: -d and --rm are options of racker run", EINVAL, ErrorKind::invalid);
  engine::RunRequest req;
  req.image = a.positional[0];
  req.flags.args.assign(a.positional.begin() + 1, a.positional.end());
  req.flags.tty = a.flag("tty");
  req.interactive = a.flag("interactive");
  req.remove = a.flag("rm");
  req.detach = a.flag("detach");
  if (!create && req.flags.tty && req.interactive && !req.detach && !::isatty(0)) {
    // a terminal would echo the piped input back and turn \n into \r\n (docker refuses)
    log::debug("stdin is not a terminal: running without a pseudo-TTY, as with -i alone");
    req.flags.tty = false;
  }
  if (!create && req.interactive && !req.flags.tty) share_stdin_pipe();
  req.name = a.get("name");
  for (auto& file : a.all("env-file")) {
    for (auto& line : split(read_file(file), '\n')) {
      std::string l = trim(line);
      if (!l.empty() && l[0] != '#') req.flags.env.push_back(l);
    }
  }
  for (auto& e : a.all("env")) req.flags.env.push_back(e);
  for (auto& v : a.all("volume")) req.flags.volumes.push_back(engine::parse_volume(v));
  req.flags.tmpfs = a.all("tmpfs");
  req.flags.workdir = a.get("workdir");
  req.flags.user = a.get("user");
  if (a.has("entrypoint")) {
    std::string ep = a.get("entrypoint");
    req.flags.entrypoint = ep.empty() ? std::vector<std::string>{} : std::vector<std::string>{ep};
  }
  req.flags.hostname = a.get("hostname");
  req.flags.network = a.get("network", "private");
  for (auto& spec : a.all("publish"))
    for (auto& m : engine::parse_publish(spec)) req.flags.publish.push_back(m);
  if (a.has("memory")) req.flags.memory = engine::parse_memory(a.get("memory"));
  if (a.has("cpus")) {
    char* end = nullptr;
    std::string c = a.get("cpus");
    double v = std::strtod(c.c_str(), &end);
    if (c.empty() || *end != '\0')
      throw Error("invalid --cpus \"" + c + "\"", EINVAL, ErrorKind::invalid);
    req.flags.cpus = v;
  }
  if (a.has("pids-limit")) {
    auto n = parse_int(a.get("pids-limit"));
    if (!n)
      throw Error("invalid --pids-limit \"" + a.get("pids-limit") + "\"", EINVAL,
                  ErrorKind::invalid);
    req.flags.pids_limit = *n;
  }
  req.flags.read_only = a.flag("read-only");
  req.flags.cap_add = a.all("cap-add");
  req.flags.cap_drop = a.all("cap-drop");
  req.flags.privileged = a.flag("privileged");
  req.flags.userns = a.get("userns");
  if (!req.flags.userns.empty() && req.flags.userns != "auto" && req.flags.userns != "host")
    throw Error("invalid --userns \"" + req.flags.userns + "\": use auto or host", EINVAL,
                ErrorKind::invalid);
  parse_security_opts(a.all("security-opt"), req.flags);
  req.flags.init = a.flag("init");
  if (a.flag("boot") && a.flag("no-boot"))
    throw Error("--boot and --no-boot contradict each other", EINVAL, ErrorKind::invalid);
  req.boot = a.flag("boot")      ? engine::RunRequest::Boot::yes
             : a.flag("no-boot") ? engine::RunRequest::Boot::no
                                 : engine::RunRequest::Boot::automatic;
  if (a.has("boot-timeout")) {
    auto n = parse_int(a.get("boot-timeout"));
    if (!n || *n <= 0)
      throw Error("invalid --boot-timeout \"" + a.get("boot-timeout") + "\"", EINVAL,
                  ErrorKind::invalid);
    req.boot_timeout_s = static_cast<int>(*n);
  }
  req.pull = a.get("pull", "missing");
  if (req.pull != "always" && req.pull != "missing" && req.pull != "never")
    throw Error("invalid --pull \"" + req.pull + "\": use always, missing or never", EINVAL,
                ErrorKind::invalid);
  req.store_root = g.root;
  req.pull_options.platform = a.get("platform");
  req.pull_options.registries_conf = g.registries_conf;
  req.pull_options.authfile = g.authfile;
  req.pull_options.certs_dir = g.certs_dir;
  return req;
}

}  // namespace racker::cli
