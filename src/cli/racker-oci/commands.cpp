#include "cli/racker-oci/commands.hpp"

#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <functional>
#include <map>

#include <nlohmann/json.hpp>

#include "base/error.hpp"
#include "base/fs.hpp"
#include "base/strings.hpp"
#include "cli/args.hpp"
#include "oci/spec.hpp"
#include "runtime/container.hpp"

namespace racker::cli {
namespace {

using runtime::Runtime;

struct Command {
  const char* name;
  const char* usage;  // arguments
  const char* summary;
  std::vector<OptionSpec> options;
  std::function<int(const ParsedArgs&, const GlobalOptions&)> fn;
  size_t min_args;
  size_t max_args;  // SIZE_MAX = any
};

void print(const std::string& s) {
  std::fwrite(s.data(), 1, s.size(), stdout);
  std::fflush(stdout);
}

const std::string& id_arg(const ParsedArgs& a) {
  return a.positional.at(0);
}

int preserve_fds(const ParsedArgs& a) {
  auto n = parse_int(a.get("preserve-fds", "0"));
  if (!n || *n < 0 || *n > 65536)
    throw Error("invalid --preserve-fds \"" + a.get("preserve-fds") + "\"", EINVAL);
  return static_cast<int>(*n);
}

runtime::CreateOptions create_options(const ParsedArgs& a, const GlobalOptions& g) {
  runtime::CreateOptions o;
  o.systemd_cgroup = g.systemd_cgroup;
  o.bundle = a.get("bundle", ".");
  o.pid_file = a.get("pid-file");
  o.console_socket = a.get("console-socket");
  o.no_pivot = a.flag("no-pivot");
  o.no_new_keyring = a.flag("no-new-keyring");
  o.preserve_fds = preserve_fds(a);
  return o;
}

const std::vector<OptionSpec> kCreateOpts = {
    {"bundle", 'b', true, false, "path to the bundle (default: current directory)"},
    {"console-socket", 0, true, false, "unix socket that receives the pty master"},
    {"pid-file", 0, true, false, "file to write the container's pid to"},
    {"no-pivot", 0, false, false, "use chroot instead of pivot_root"},
    {"no-new-keyring", 0, false, false, "keep the caller's session keyring"},
    {"preserve-fds", 0, true, false, "number of extra fds (from 3) to pass on"},
};

std::vector<OptionSpec> with(std::vector<OptionSpec> base, std::vector<OptionSpec> more) {
  base.insert(base.end(), more.begin(), more.end());
  return base;
}

std::string table(const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> w;
  for (auto& r : rows)
    for (size_t i = 0; i < r.size(); ++i) {
      if (w.size() <= i) w.push_back(0);
      w[i] = std::max(w[i], r[i].size());
    }
  std::string out;
  for (auto& r : rows) {
    for (size_t i = 0; i < r.size(); ++i) {
      out += r[i];
      if (i + 1 < r.size()) out += std::string(w[i] - r[i].size() + 4, ' ');
    }
    out += "\n";
  }
  return out;
}

nlohmann::json features() {
  using nlohmann::json;
  return {
      {"ociVersionMin", "1.0.0"},
      {"ociVersionMax", "1.2.0"},
      {"hooks",
       {"prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"}},
      {"mountOptions",
       {"async",       "atime",      "bind",        "defaults",     "dev",
        "diratime",    "dirsync",    "exec",        "lazytime",     "idmap",
        "loud",        "mand",       "noatime",     "nodev",        "nodiratime",
        "noexec",      "nolazytime", "nomand",      "norelatime",   "nostrictatime",
        "nosuid",      "private",    "rbind",       "relatime",     "remount",
        "ridmap",      "ro",         "rprivate",    "rshared",      "rslave",
        "runbindable", "rw",         "shared",      "silent",       "slave",
        "strictatime", "suid",       "sync",        "unbindable",   "rro",
        "rrw",         "rnosuid",    "rsuid",       "rnodev",       "rdev",
        "rnoexec",     "rexec",      "rnoatime",    "ratime",       "rnodiratime",
        "rdiratime",   "rrelatime",  "rnorelatime", "rstrictatime", "rnostrictatime",
        "tmpcopyup"}},
      {"linux",
       {{"namespaces", {"cgroup", "ipc", "mount", "network", "pid", "user", "uts"}},
        {"capabilities", json::array()},
        {"cgroup", {{"v1", true}, {"v2", true}, {"systemd", true}, {"systemdUser", false}}},
        {"seccomp",
         {{"enabled", true},
          {"actions",
           {"SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS",
            "SCMP_ACT_KILL_THREAD", "SCMP_ACT_LOG", "SCMP_ACT_NOTIFY", "SCMP_ACT_TRACE",
            "SCMP_ACT_TRAP"}},
          {"operators",
           {"SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT", "SCMP_CMP_LE", "SCMP_CMP_LT",
            "SCMP_CMP_MASKED_EQ", "SCMP_CMP_NE"}},
          {"archs",
           {"SCMP_ARCH_X86", "SCMP_ARCH_X86_64", "SCMP_ARCH_X32", "SCMP_ARCH_AARCH64",
            "SCMP_ARCH_ARM"}}}},
        {"apparmor", {{"enabled", false}}},
        {"selinux", {{"enabled", false}}},
        {"intelRdt", {{"enabled", false}}},
        // mounts[].uidMappings/gidMappings with "idmap"/"ridmap" (runtime/idmap.hpp)
        {"mountExtensions", {{"idmap", {{"enabled", true}}}}}}},
      {"annotations", {{"io.github.racker.version", RACKER_VERSION}}}};
}

std::vector<Command> commands() {
  std::vector<Command> c;
  c.push_back({"create", "<container-id>", "create a container from a bundle", kCreateOpts,
               [](const ParsedArgs& a, const GlobalOptions& g) {
                 Runtime(g.root).create(id_arg(a), create_options(a, g));
                 return 0;
               },
               1, 1});
  c.push_back({"start",
               "<container-id>",
               "start a created container",
               {},
               [](const ParsedArgs& a, const GlobalOptions& g) {
                 Runtime(g.root).start(id_arg(a));
                 return 0;
               },
               1,
               1});
  c.push_back({"run", "<container-id>", "create and start a container",
               with(kCreateOpts, {{"detach", 'd', false, false, "do not wait for the container"},
                                  {"keep", 0, false, false, "ignored"}}),
               [](const ParsedArgs& a, const GlobalOptions& g) {
                 return Runtime(g.root).run(id_arg(a), create_options(a, g), a.flag("detach"));
               },
               1, 1});
  c.push_back({"state",
               "<container-id>",
               "print the state of a container",
               {},
               [](const ParsedArgs& a, const GlobalOptions& g) {
                 print(oci::to_json(Runtime(g.root).state(id_arg(a))).dump(2) + "\n");
                 return 0;
               },
               1,
               1});
  c.push_back({"kill",
               "<container-id> [signal]",
               "send a signal (default SIGTERM)",
               {{"all", 'a', false, false, "send to every process of the container"}},
               [](const ParsedArgs& a, const GlobalOptions& g) {
                 int sig =
                     runtime::parse_signal(a.positional.size() > 1 ? a.positional[1] : "TERM");
                 Runtime(g.root).kill(id_arg(a), sig, a.flag("all"));
                 return 0;
               },
               1,
               2});
  c.push_back({"delete",
               "<container-id>...",
               "delete containers",
               {{"force", 'f', false, false, "kill the container first if it is running"}},
               [](const ParsedArgs& a, const GlobalOptions& g) {
                 Runtime rt(g.root);
                 for (auto& id : a.positional) rt.remove(id, a.flag("force"));
                 return 0;
               },
               1,
               SIZE_MAX});
  c.push_back({"exec",
               "<container-id> <command> [args...]",
               "run a process in a running container",
               {{"process", 'p', true, false, "process.json with the process to run"},
                {"tty", 't', false, false, "allocate a pseudo-TTY"},
                {"detach", 'd', false, false, "do not wait for the process"},
                {"pid-file", 0, true, false, "file to write the process pid to"},
                {"console-socket", 0, true, false, "unix socket that receives the pty master"},
                {"cwd", 0, true, false, "working directory in the container"},
                {"env", 'e', true, true, "set an environment variable (repeatable)"},
                {"user", 'u', true, false, "uid[:gid]"},
                {"cap", 'c', true, true, "add a capability (repeatable)"},
                {"no-new-privs", 0, false, false, "set no_new_privs"},
                {"preserve-fds", 0, true, false, "number of extra fds to pass on"},
                {"additional-gids", 'g', true, true, "ignored"},
                {"apparmor", 0, true, false, "ignored (no AppArmor)"},
                {"process-label", 0, true, false, "ignored (no SELinux)"}},
               [](const ParsedArgs& a, const GlobalOptions& g) {
                 runtime::ExecOptions o;
                 o.process_file = a.get("process");
                 o.args.assign(a.positional.begin() + 1, a.positional.end());
                 if (o.process_file.empty() && o.args.empty())
                   throw Error("exec: no command given (args or --process)", EINVAL);
                 o.env = a.all("env");
                 o.cwd = a.get("cwd");
                 o.user = a.get("user");
                 o.cap_add = a.all("cap");
                 o.tty = a.flag("tty");
                 o.detach = a.flag("detach");
                 o.pid_file = a.get("pid-file");
                 o.console_socket = a.get("console-socket");
                 o.no_new_privs = a.flag("no-new-privs");
                 o.preserve_fds = preserve_fds(a);
                 return Runtime(g.root).exec(id_arg(a), o);
               },
               1,
               SIZE_MAX});
  c.push_back({"list",
               "",
               "list containers",
               {{"format", 'f', true, false, "table or json"},
                {"quiet", 'q', false, false, "print only ids"}},
               [](const ParsedArgs& a, const GlobalOptions& g) {
                 auto all = Runtime(g.root).list();
                 std::string fmt = a.get("format", "table");
                 if (a.flag("quiet")) {
                   for (auto& c : all) print(c.state.id + "\n");
                 } else if (fmt == "json") {
                   nlohmann::json out = nlohmann::json::array();
                   for (auto& c : all)
                     out.push_back({{"ociVersion", c.state.oci_version},
                                    {"id", c.state.id},
                                    {"pid", c.state.pid},
                                    {"status", c.state.status},
                                    {"bundle", c.state.bundle},
                                    {"rootfs", c.rootfs},
                                    {"created", c.created},
                                    {"owner", c.owner},
                                    {"annotations", c.state.annotations}});
                   print(out.dump() + "\n");
                 } else if (fmt == "table") {
                   std::vector<std::vector<std::string>> rows = {
                       {"ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"}};
                   for (auto& c : all)
                     rows.push_back({c.state.id, std::to_string(c.state.pid), c.state.status,
                                     c.state.bundle, c.created, c.owner});
                   print(table(rows));
                 } else {
                   throw Error("invalid --format \"" + fmt + "\": use table or json", EINVAL);
                 }
                 return 0;
               },
               0,
               0});
  c.push_back({"ps",
               "<container-id> [ps options]",
               "list the processes of a container",
               {{"format", 'f', true, false, "table or json"}},
               [](const ParsedArgs& a, const GlobalOptions& g) {
                 auto pids = Runtime(g.root).pids(id_arg(a));
                 std::string fmt = a.get("format", "table");
                 if (fmt == "json") {
                   print(nlohmann::json(pids).dump() + "\n");
                   return 0;
                 }
                 if (fmt != "table")
                   throw Error("invalid --format \"" + fmt + "\": use table or json", EINVAL);
                 std::vector<std::vector<std::string>> rows = {{"PID", "CMD"}};
                 for (pid_t p : pids) {
                   auto cmd = read_file_if_exists("/proc/" + std::to_string(p) + "/cmdline");
                   std::string s = cmd ? *cmd : "";
                   for (auto& ch : s)
                     if (ch == '\0') ch = ' ';
                   rows.push_back({std::to_string(p), trim(s)});
                 }
                 print(table(rows));
                 return 0;
               },
               1,
               SIZE_MAX});
  c.push_back({"pause",
               "<container-id>",
               "freeze every process of a container",
               {},
               [](const ParsedArgs& a, const GlobalOptions& g) {
                 Runtime(g.root).pause(id_arg(a));
                 return 0;
               },
               1,
               1});
  c.push_back({"resume",
               "<container-id>",
               "thaw a paused container",
               {},
               [](const ParsedArgs& a, const GlobalOptions& g) {
                 Runtime(g.root).resume(id_arg(a));
                 return 0;
               },
               1,
               1});
  c.push_back({"spec",
               "",
               "write a template config.json",
               {{"bundle", 'b', true, false, "where to write it (default: current directory)"},
                {"rootless", 0, false, false, "a spec for use without root"}},
               [](const ParsedArgs& a, const GlobalOptions&) {
                 std::string path = a.get("bundle", ".") + "/config.json";
                 if (path_exists(path)) throw Error("file " + path + " already exists", EEXIST);
                 write_file_atomic(path, oci::example_spec(a.flag("rootless")).dump(2) + "\n");
                 return 0;
               },
               0,
               0});
  c.push_back({"features",
               "",
               "print what this runtime supports, as JSON",
               {},
               [](const ParsedArgs&, const GlobalOptions&) {
                 print(features().dump(2) + "\n");
                 return 0;
               },
               0,
               0});
  return c;
}

const Command* find(const std::string& verb) {
  static const std::vector<Command> all = commands();
  for (auto& c : all)
    if (verb == c.name) return &c;
  return nullptr;
}

}  // namespace

bool is_command(const std::string& verb) {
  return find(verb) != nullptr;
}

bool starts_processes(const std::string& verb) {
  return verb == "create" || verb == "run" || verb == "exec";
}

std::string commands_help() {
  std::string out;
  for (auto* name : {"create", "start", "run", "state", "kill", "delete", "exec", "list", "ps",
                     "pause", "resume", "spec", "features"}) {
    auto* c = find(name);
    std::string left = std::string("  ") + c->name;
    left.resize(12, ' ');
    out += left + c->summary + "\n";
  }
  return out;
}

int run_command(const std::string& verb, const std::vector<std::string>& args,
                const GlobalOptions& global) {
  const Command* c = find(verb);
  std::vector<OptionSpec> opts = c->options;
  opts.push_back({"help", 'h', false, false, "show help"});
  ParsedArgs a = parse_args(args, opts);
  if (a.flag("help")) {
    print(std::string("usage: racker-oci ") + c->name + " [options] " + c->usage + "\n\n" +
          c->summary + "\n\noptions:\n" + options_help(opts));
    return 0;
  }
  if (a.positional.size() < c->min_args)
    throw Error(
        std::string(c->name) + ": missing " + c->usage + " (see racker-oci " + c->name + " --help)",
        EINVAL);
  if (a.positional.size() > c->max_args)
    throw Error(
        std::string(c->name) + ": unexpected argument \"" + a.positional[c->max_args] + "\"",
        EINVAL);
  return c->fn(a, global);
}

}  // namespace racker::cli
