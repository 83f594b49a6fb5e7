#include "engine/nat.hpp"

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <vector>

#include "base/error.hpp"
#include "base/fd.hpp"
#include "base/fs.hpp"
#include "base/log.hpp"
#include "base/strings.hpp"

extern char** environ;

namespace racker::engine::net {
namespace {

// Runs argv (found in the usual sbin/bin directories) with output discarded; returns its exit
// status, 127 when it cannot be started.
int run_quiet(const std::vector<std::string>& argv) {
  std::string exe;
  for (auto* dir : {"/usr/sbin/", "/sbin/", "/usr/bin/", "/bin/"})
    if (::access((dir + argv[0]).c_str(), X_OK) == 0) {
      exe = dir + argv[0];
      break;
    }
  if (exe.empty()) return 127;
  std::vector<char*> args;
  for (auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_adddup2(&fa, 1, 2);
  pid_t pid;
  int rc = ::posix_spawn(&pid, exe.c_str(), &fa, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0) return 127;
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0)
    if (errno != EINTR) return 127;
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

}  // namespace

bool install_nat(const Ipv4Net& subnet, const std::string& bridge) {
  std::string src = format_cidr({subnet.addr & subnet.mask(), subnet.prefix});
  std::vector<std::vector<std::string>> rules = {
      {"-t", "nat", "POSTROUTING", "-s", src, "!", "-o", bridge, "-j", "MASQUERADE"},
      {"-t", "filter", "FORWARD", "-i", bridge, "-j", "ACCEPT"},
      {"-t", "filter", "FORWARD", "-o", bridge, "-m", "conntrack", "--ctstate",
       "RELATED,ESTABLISHED", "-j", "ACCEPT"}};
  bool nat = false;
  for (size_t r = 0; r < rules.size(); ++r) {
    auto with = [&](const char* op) {
      std::vector<std::string> argv = {"iptables", "-w", rules[r][0], rules[r][1], op};
      argv.insert(argv.end(), rules[r].begin() + 2, rules[r].end());
      return argv;
    };
    int rc = run_quiet(with("-C"));
    if (rc == 127) break;
    if (rc != 0) rc = run_quiet(with(r == 0 ? "-A" : "-I"));
    if (r == 0) nat = rc == 0;
  }
  if (nat) return true;
  std::string script =
      "table ip racker {}\nflush table ip racker\ntable ip racker {\n"
      "  chain postrouting {\n"
      "    type nat hook postrouting priority srcnat; policy accept;\n"
      "    ip saddr " +
      src + " oifname != \"" + bridge +
      "\" masquerade\n"
      "  }\n}\n";
  auto file = anonymous_file("/tmp");
  if (!write_all(file.get(), script.data(), script.size())) return false;
  // the child does not inherit the (close-on-exec) fd, but may open it through our /proc
  std::string path = "/proc/" + std::to_string(::getpid()) + "/fd/" + std::to_string(file.get());
  return run_quiet({"nft", "-f", path}) == 0;
}

void enable_ip_forward() {
  try {
    auto fwd = trim(read_file_if_exists("/proc/sys/net/ipv4/ip_forward").value_or("1"));
    if (fwd != "1") write_file("/proc/sys/net/ipv4/ip_forward", "1");
  } catch (const Error& e) {
    log::debug(std::string("network: cannot enable ip_forward: ") + e.what());
  }
}

}  // namespace racker::engine::net
