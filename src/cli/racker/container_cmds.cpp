// Container commands: ps, logs, stop, kill, rm, inspect (engine::ContainerStore).
#include <fcntl.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <thread>

#include "base/error.hpp"
#include "base/strings.hpp"
#include "cli/args.hpp"
#include "cli/racker/commands.hpp"
#include "engine/containers.hpp"
#include "engine/exec_cp.hpp"
#include "engine/rootless.hpp"
#include "engine/run.hpp"
#include "runtime/container.hpp"

namespace racker::cli {
namespace {

std::string created_ago(const std::string& rfc3339) {
  struct tm tm = {};
  if (rfc3339.size() < 19 || !::strptime(rfc3339.substr(0, 19).c_str(), "%Y-%m-%dT%H:%M:%S", &tm))
    return rfc3339;
  long d = static_cast<long>(::time(nullptr) - ::timegm(&tm));
  if (d < 0) d = 0;
  auto unit = [](long n, const char* u) {
    return std::to_string(n) + " " + u + (n == 1 ? "" : "s") + " ago";
  };
  if (d < 60) return unit(d, "second");
  if (d < 3600) return unit(d / 60, "minute");
  if (d < 86400) return unit(d / 3600, "hour");
  return unit(d / 86400, "day");
}

std::string command_text(const std::vector<std::string>& cmd) {
  std::string s;
  for (auto& a : cmd) s += (s.empty() ? "" : " ") + a;
  if (s.size() > 20) s = s.substr(0, 19) + "…";
  return "\"" + s + "\"";
}

void write_all(int fd, const char* p, size_t n) {
  while (n > 0) {
    ssize_t w = ::write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return;
    }
    p += w;
    n -= static_cast<size_t>(w);
  }
}

// Copies what fd holds from its current offset to stdout; true when it copied anything.
bool drain(int fd) {
  char buf[65536];
  bool any = false;
  while (true) {
    ssize_t r = ::read(fd, buf, sizeof buf);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return any;
    write_all(1, buf, static_cast<size_t>(r));
    any = true;
  }
}

void need_names(const ParsedArgs& a, const char* cmd) {
  if (a.positional.empty())
    throw Error(std::string(cmd) + ": missing container name (see racker " + cmd + " --help)",
                EINVAL);
}

// Runs fn for every name; reports failures on stderr and returns 1 when any failed.
template <typename Fn>
int for_each_name(const std::vector<std::string>& names, Fn fn) {
  int rc = 0;
  for (auto& n : names) {
    try {
      fn(n);
    } catch (const Error& e) {
      std::fprintf(stderr, "racker: %s\n", printable(e.what(), true).c_str());
      rc = 1;
    }
  }
  return rc;
}

}  // namespace

// "0.0.0.0:8080->80/tcp, ..." while it runs (docker ps' PORTS)
static std::string ports_text(const engine::ContainerEntry& c) {
  std::string out;
  if (!c.running()) return out;
  for (auto& m : c.rec.ports) out += (out.empty() ? "" : ", ") + engine::describe(m);
  return out;
}

int cmd_ps(const std::vector<std::string>& args, const RackerGlobals& g) {
  const std::vector<OptionSpec> opts = {{"all", 'a', false, false, "show stopped containers too"},
                                        {"quiet", 'q', false, false, "only print container ids"},
                                        {"no-trunc", 0, false, false, "print full ids"},
                                        {"format", 0, true, false, "json: one JSON array"},
                                        {"help", 'h', false, false, "show help"}};
  auto a = parse_args(args, opts);
  if (a.flag("help")) {
    std::printf("usage: racker ps [options]\n\nLists containers.\n\noptions:\n%s",
                options_help(opts).c_str());
    return 0;
  }
  std::string format = a.get("format");
  if (!format.empty() && format != "json")
    throw Error("ps: unsupported --format \"" + format + "\" (use json)", EINVAL);
  engine::ContainerStore store(g.root);
  std::vector<engine::ContainerEntry> shown;
  for (auto& c : store.list())
    if (a.flag("all") || c.running()) shown.push_back(c);
  bool full = a.flag("no-trunc");
  if (a.flag("quiet")) {
    for (auto& c : shown) std::printf("%s\n", full ? c.id.c_str() : c.id.substr(0, 12).c_str());
    return 0;
  }
  if (format == "json") {
    nlohmann::json out = nlohmann::json::array();
    for (auto& c : shown) {
      nlohmann::json o = {{"id", c.id},
                          {"name", c.name()},
                          {"image", c.rec.image},
                          {"command", c.rec.command},
                          {"created", c.rec.created},
                          {"state", c.running() ? engine::to_string(c.status) : "exited"},
                          {"status", c.status_text()},
                          {"pid", c.pid},
                          {"ports", ports_text(c)}};
      if (c.rec.exit_code) o["exit_code"] = *c.rec.exit_code;
      out.push_back(o);
    }
    std::printf("%s\n", out.dump().c_str());
    return 0;
  }
  std::vector<std::vector<std::string>> rows = {
      {"CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "PORTS", "NAMES"}};
  for (auto& c : shown)
    rows.push_back({full ? c.id : c.id.substr(0, 12), c.rec.image, command_text(c.rec.command),
                    created_ago(c.rec.created), c.status_text(), ports_text(c), c.name()});
  std::vector<size_t> width(7, 0);
  for (auto& r : rows)
    for (size_t i = 0; i < r.size(); ++i) width[i] = std::max(width[i], r[i].size());
  for (auto& r : rows) {
    std::string line;
    for (size_t i = 0; i < r.size(); ++i) {
      line += r[i];
      if (i + 1 < r.size()) line += std::string(width[i] - r[i].size() + 3, ' ');
    }
    std::printf("%s\n", line.c_str());
  }
  return 0;
}

int cmd_logs(const std::vector<std::string>& args, const RackerGlobals& g) {
  const std::vector<OptionSpec> opts = {
      {"follow", 'f', false, false, "follow the log until the container stops"},
      {"help", 'h', false, false, "show help"}};
  auto a = parse_args(args, opts);
  if (a.flag("help")) {
    std::printf(
        "usage: racker logs [-f] CONTAINER\n\n"
        "The output of a detached container; for a booted OS container, its journal.\n\n"
        "options:\n%s",
        options_help(opts).c_str());
    return 0;
  }
  need_names(a, "logs");
  if (a.positional.size() != 1) throw Error("logs: one container at a time", EINVAL);
  engine::ContainerStore store(g.root);
  auto c = store.find(a.positional[0]);
  if (c.rec.booted && c.running()) {
    // a booted OS container: its log is the system's journal (as nspawn's console shows it)
    engine::ExecRequest r;
    r.container = c.id;
    r.args = {"journalctl", "-b", "--no-pager", "-q"};
    if (a.flag("follow")) r.args.push_back("-f");
    r.store_root = g.root;
    return engine::exec_in_container(r);
  }
  int fd = ::open(store.log_path(c).c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0 && errno != ENOENT) throw_errno("open " + store.log_path(c));
  drain(fd >= 0 ? fd : -1);
  if (a.flag("follow")) {
    while (true) {
      if (fd < 0) fd = ::open(store.log_path(c).c_str(), O_RDONLY | O_CLOEXEC);
      bool running = store.refresh(c).running();
      if (fd >= 0 && drain(fd)) continue;
      if (!running) {
        if (fd >= 0) drain(fd);
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }
  if (fd >= 0) ::close(fd);
  return 0;
}

int cmd_stop(const std::vector<std::string>& args, const RackerGlobals& g) {
  const std::vector<OptionSpec> opts = {
      {"time", 't', true, false, "seconds to wait before SIGKILL (default 10)"},
      {"help", 'h', false, false, "show help"}};
  auto a = parse_args(args, opts);
  if (a.flag("help")) {
    std::printf("usage: racker stop [-t SECONDS] CONTAINER...\n\noptions:\n%s",
                options_help(opts).c_str());
    return 0;
  }
  need_names(a, "stop");
  int timeout = 10;
  if (a.has("time")) {
    auto n = parse_int(a.get("time"));
    if (!n || *n < 0) throw Error("stop: invalid -t \"" + a.get("time") + "\"", EINVAL);
    timeout = static_cast<int>(*n);
  }
  engine::ContainerStore store(g.root);
  return for_each_name(a.positional, [&](const std::string& n) {
    store.stop(store.find(n), timeout);
    std::printf("%s\n", n.c_str());
    std::fflush(stdout);
  });
}

int cmd_start(const std::vector<std::string>& args, const RackerGlobals& g) {
  const std::vector<OptionSpec> opts = {
      {"attach", 'a', false, false, "wait for the container, its output on ours, its exit status"},
      {"interactive", 'i', false, false, "with -a: our stdin to the container"},
      {"help", 'h', false, false, "show help"}};
  ParsedArgs a = parse_args(args, opts);
  if (a.flag("help")) {
    std::printf(
        "usage: racker start [-a [-i]] CONTAINER...\n\n"
        "Starts containers made by racker create, or exited ones again (their files kept).\n"
        "Without -a they run in the background (racker logs shows their output).\n\n"
        "options:\n%s",
        options_help(opts).c_str());
    return 0;
  }
  if (a.positional.empty())
    throw Error("start: missing CONTAINER (see racker start --help)", EINVAL, ErrorKind::invalid);
  bool attach = a.flag("attach");
  if (attach && a.positional.size() > 1)
    throw Error("start: -a takes one container", EINVAL, ErrorKind::invalid);
  if (attach) {
    return engine::start_container(g.root, engine::default_state_root(), a.positional[0], true,
                                   a.flag("interactive"));
  }
  return for_each_name(a.positional, [&](const std::string& n) {
    engine::start_container(g.root, engine::default_state_root(), n, false, false);
    std::printf("%s\n", n.c_str());
    std::fflush(stdout);
  });
}

int cmd_kill(const std::vector<std::string>& args, const RackerGlobals& g) {
  const std::vector<OptionSpec> opts = {
      {"signal", 's', true, false, "signal to send (default KILL)"},
      {"help", 'h', false, false, "show help"}};
  auto a = parse_args(args, opts);
  if (a.flag("help")) {
    std::printf("usage: racker kill [-s SIGNAL] CONTAINER...\n\noptions:\n%s",
                options_help(opts).c_str());
    return 0;
  }
  need_names(a, "kill");
  int sig = runtime::parse_signal(a.get("signal", "KILL"));
  engine::ContainerStore store(g.root);
  return for_each_name(a.positional, [&](const std::string& n) {
    store.kill(store.find(n), sig);
    std::printf("%s\n", n.c_str());
    std::fflush(stdout);
  });
}

int cmd_rm(const std::vector<std::string>& args, const RackerGlobals& g) {
  const std::vector<OptionSpec> opts = {
      {"force", 'f', false, false, "kill and remove a running container"},
      {"help", 'h', false, false, "show help"}};
  auto a = parse_args(args, opts);
  if (a.flag("help")) {
    std::printf("usage: racker rm [-f] CONTAINER...\n\noptions:\n%s", options_help(opts).c_str());
    return 0;
  }
  need_names(a, "rm");
  engine::ContainerStore store(g.root);
  return for_each_name(a.positional, [&](const std::string& n) {
    store.remove(store.find(n), a.flag("force"));
    std::printf("%s\n", n.c_str());
    std::fflush(stdout);
  });
}

int cmd_inspect(const std::vector<std::string>& args, const RackerGlobals& g) {
  const std::vector<OptionSpec> opts = {{"help", 'h', false, false, "show help"}};
  auto a = parse_args(args, opts);
  if (a.flag("help")) {
    std::printf("usage: racker inspect CONTAINER...\n");
    return 0;
  }
  need_names(a, "inspect");
  engine::ContainerStore store(g.root);
  nlohmann::json out = nlohmann::json::array();
  int rc = for_each_name(
      a.positional, [&](const std::string& n) { out.push_back(store.inspect(store.find(n))); });
  std::printf("%s\n", out.dump(2).c_str());
  return rc;
}

// racker port CONTAINER [PORT[/PROTO]]: docker's "80/tcp -> 0.0.0.0:8080" lines, or with a
// port, its host addresses.
int cmd_port(const std::vector<std::string>& args, const RackerGlobals& g) {
  const std::vector<OptionSpec> opts = {{"help", 'h', false, false, "show help"}};
  auto a = parse_args(args, opts);
  if (a.flag("help")) {
    std::printf(
        "usage: racker port CONTAINER [PORT[/PROTO]]\n\nLists a running container's published "
        "ports (-p).\n");
    return 0;
  }
  if (a.positional.empty() || a.positional.size() > 2)
    throw Error("port: give CONTAINER and optionally PORT[/PROTO] (see racker port --help)", EINVAL,
                ErrorKind::invalid);
  engine::ContainerStore store(g.root);
  auto c = store.find(a.positional[0]);
  std::string want = a.positional.size() == 2 ? a.positional[1] : "";
  if (!want.empty() && want.find('/') == std::string::npos) want += "/tcp";
  bool found = false;
  for (auto& m : c.running() ? c.rec.ports : std::vector<engine::PortMapping>{}) {
    std::string key = std::to_string(m.container_port) + "/" + m.proto;
    std::string host =
        (m.host_ip.empty() ? "0.0.0.0" : m.host_ip) + ":" + std::to_string(m.host_port);
    if (want.empty()) {
      std::printf("%s -> %s\n", key.c_str(), host.c_str());
    } else if (key == want) {
      std::printf("%s\n", host.c_str());
      found = true;
    }
  }
  if (!want.empty() && !found)
    throw Error("no public port '" + want + "' published for " + c.name(), ENOENT,
                ErrorKind::not_found);
  return 0;
}

}  // namespace racker::cli
