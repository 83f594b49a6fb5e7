#include "engine/network.hpp"

#include <net/if.h>

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <optional>
#include <thread>

#include "base/error.hpp"
#include "base/fd.hpp"
#include "base/fs.hpp"
#include "base/ids.hpp"
#include "base/log.hpp"
#include "base/strings.hpp"
#include "engine/bridge.hpp"
#include "engine/net_leases.hpp"
#include "engine/netlink.hpp"
#include "engine/rootless.hpp"

namespace racker::engine::net {
namespace {

void check_id(const std::string& id) {
  if (id.empty() || id == "." || id == ".." || id.find('/') != std::string::npos)
    throw Error("invalid container id \"" + id + "\" for a network namespace", EINVAL);
}

// Releases the lease and the attach record of id, under held or, without it, the lock taken
// here.
void drop_attachment(const std::string& root, const std::string& id,
                     const std::optional<Ipv4Net>& address, const NetLock* held) {
  std::optional<NetLock> own;
  if (!held) own.emplace(root);
  if (address) release_lease(held ? *held : *own, root, address->addr, id);
  remove_attach(root, id);
}

// teardown for a network state root; held: the lock, when the caller holds it.
void release_network(const std::string& root, const std::string& id, const NetLock* held) {
  std::string ns = netns_path(root, id);
  // With its last user gone the kernel dismantles the namespace, eth0 and with it our veth
  // end on its own workqueue (some 30 ms later: RCU grace periods). Deleting the link here
  // would make every run wait for those; only a veth whose namespace was not ours to unmount
  // any more (a crash halfway through teardown) is deleted. The lease goes at once: the
  // address may answer from the dying namespace for those milliseconds, and take_lease
  // starts at a random address, so handing it out again right away is unlikely.
  bool unmounted = ::umount2(ns.c_str(), MNT_DETACH) == 0;
  if (!unmounted && errno != EINVAL && errno != ENOENT)
    log::debug("network: unmount " + ns + ": " + std::strerror(errno));
  if (::unlink(ns.c_str()) != 0 && errno != ENOENT)
    log::debug("network: remove " + ns + ": " + std::strerror(errno));
  auto record = read_attach(root, id);
  if (!record) return;
  std::string veth = record->veth.empty() ? veth_name(id) : record->veth;
  if (!unmounted && ::if_nametoindex(veth.c_str()) != 0) {
    Rtnl host;
    int err = delete_link(host, veth);
    if (err != 0 && err != ENODEV)
      log::debug("network: delete veth " + veth + " of " + id + ": " + std::strerror(err));
  }
  drop_attachment(root, id, record->address, held);
}

// What no container will release any more, found and released under the lock before every
// lease is taken: the network of ids whose namespace is no longer mounted (a reboot with a
// persistent /run, a namespace unmounted by hand, a crash halfway through teardown), and
// leases with neither a namespace nor an attach record (a racker killed between taking the
// lease and writing the record). setup_private mounts the namespace before it takes the lock
// for a lease, so a live container's lease always has its mount.
void release_stale(const NetLock& lock, const std::string& root) {
  for (auto& id : stale_attachments(lock, root)) {
    log::debug("network: releasing stale lease of " + id);
    try {
      release_network(root, id, &lock);
    } catch (const std::exception& e) {
      log::debug("network: teardown of " + id + ": " + e.what());
    }
  }
  for (auto& address : drop_orphan_leases(lock, root))
    log::debug("network: released orphaned lease " + address);
}

// The uplink half of setup_private, run in the new namespace's thread: lease, veth, eth0's
// address and default route.
void attach_uplink(Rtnl& host, Rtnl& ns, const Bridge& b, const std::string& root,
                   const std::string& id, Attachment& out) {
  Ipv4Net mine{0, b.net.prefix};
  std::string veth = veth_name(id);
  {
    // The lease and its record appear together under the lock; teardown finds what to release
    // in the record, even after a crash halfway through, and a racker killed before it is
    // written leaves a lease that the next one's release_stale drops.
    NetLock lock(root);
    release_stale(lock, root);
    mine.addr = take_lease(lock, root, b.net, id);
    try {
      write_attach(root, id, mine, veth);
    } catch (...) {
      release_lease(lock, root, mine.addr, id);
      throw;
    }
  }
  try {
    UniqueFd nsfd(::open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC));
    if (!nsfd) throw_errno("open /proc/thread-self/ns/net");
    create_veth(host, veth, b.index, nsfd.get(), b.mtu);
    int eth0 = static_cast<int>(::if_nametoindex("eth0"));  // this thread is in the namespace
    if (eth0 <= 0) throw_errno("find eth0 in the container's namespace");
    link_up(ns, eth0, "eth0");
    add_address(ns, eth0, mine, "eth0");
    add_default_route(ns, eth0, b.net.addr);
  } catch (...) {
    delete_link(host, veth);
    drop_attachment(root, id, mine, nullptr);
    throw;
  }
  out.address = format_cidr(mine);
  out.gateway = format_ipv4(b.net.addr);
  out.host_veth = veth;
  out.uplink = true;
}

// Runs in a thread of its own: unsharing the network namespace moves only the calling thread,
// and the thread's end drops it (the bind mount keeps the namespace).
void setup_in_thread(const std::string& root, const std::string& id, Attachment& out) {
  Rtnl host;  // opened before unshare: stays in the host's namespace
  std::optional<Bridge> bridge;
  if (!rootless()) try {
      // if_nametoindex: still in the host's namespace
      bridge = ensure_bridge(host, root);
    } catch (const Error& e) {
      log::debug("network: container " + id + " gets loopback only: " + e.what());
    }
  std::string path = netns_path(root, id);
  UniqueFd placeholder(::open(path.c_str(), O_RDONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0444));
  if (!placeholder) throw_errno("create " + path);
  placeholder.reset();
  try {
    if (::unshare(CLONE_NEWNET) != 0) throw_errno("unshare network namespace");
    if (::mount("/proc/thread-self/ns/net", path.c_str(), nullptr, MS_BIND, nullptr) != 0)
      throw_errno("bind mount network namespace at " + path);
  } catch (...) {
    ::unlink(path.c_str());
    throw;
  }
  out.netns_path = path;
  // as docker sets them: any port and ICMP echo sockets for everyone. The namespace belongs
  // to the host's user namespace, so the root of a --userns=auto container could otherwise
  // not bind port 80 (CAP_NET_BIND_SERVICE counts in the namespace's owner) or ping.
  // (/proc/sys/net is this thread's namespace's)
  for (auto [knob, value] : {std::pair{"net/ipv4/ip_unprivileged_port_start", "0"},
                             std::pair{"net/ipv4/ping_group_range", "0 2147483647"}}) {
    try {
      write_file(std::string("/proc/sys/") + knob, value);
    } catch (const Error& e) {
      log::debug("network: container " + id + ": " + e.what());
    }
  }
  Rtnl ns;
  int lo = static_cast<int>(::if_nametoindex("lo"));
  link_up(ns, lo > 0 ? lo : 1, "lo");
  if (!bridge) return;
  try {
    attach_uplink(host, ns, *bridge, root, id, out);
  } catch (const Error& e) {
    log::debug("network: container " + id + " gets loopback only: " + e.what());
  }
}

std::string pasta_pid_file(const std::string& root, const std::string& id) {
  return root + "/pasta/" + id + ".pid";
}

// True once the namespace at path has eth0 up with an IPv4 address (pasta configured it).
bool uplink_ready(const std::string& path) {
  bool ready = false;
  std::thread t([&] {
    UniqueFd ns(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!ns || ::unshare(CLONE_FS) != 0 || ::setns(ns.get(), CLONE_NEWNET) != 0) return;
    UniqueFd sock(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    if (!sock) return;
    struct ifreq ifr {};
    std::strncpy(ifr.ifr_name, "eth0", IFNAMSIZ - 1);
    if (::ioctl(sock.get(), SIOCGIFFLAGS, &ifr) != 0 || !(ifr.ifr_flags & IFF_UP)) return;
    ready = ::ioctl(sock.get(), SIOCGIFADDR, &ifr) == 0;
  });
  t.join();
  return ready;
}

// An ordinary user's private network: pasta (passt) gives the namespace an eth0 with the
// host's address and routes and carries its traffic through sockets of the user's. It runs
// detached from us (a detached container outlives racker) and quits when the namespace's
// file goes (teardown); its pid file lets teardown make sure.
void start_pasta(const std::string& root, const std::string& path, const std::string& id,
                 Attachment& out) {
  std::string pasta = find_in_path("pasta");
  if (pasta.empty())
    throw Error(
        "a private network as an ordinary user needs pasta (apt-get install passt), "
        "or use --network none or --network host",
        ENOENT);
  mkdir_p(root + "/pasta", 0700);
  std::string pid_file = pasta_pid_file(root, id);
  std::vector<std::string> args = {pasta, "--config-net", "--netns", path,  "-I",   "eth0",  "-q",
                                   "-f",  "-t",           "none",    "-u",  "none", "-T",    "none",
                                   "-U",  "none",         "--runas", "0:0", "-P",   pid_file};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  // its messages go to a log file (a pipe of ours would break when we leave)
  std::string log_file = root + "/pasta/" + id + ".log";
  UniqueFd log(::open(log_file.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  if (!log) throw_errno("create " + log_file);
  int pids[2];
  if (::pipe2(pids, O_CLOEXEC) != 0) throw_errno("pipe");
  UniqueFd pid_r(pids[0]), pid_w(pids[1]);
  pid_t child = ::fork();
  if (child < 0) throw_errno("fork");
  if (child == 0) {
    ::setsid();
    pid_t grandchild = ::fork();
    if (grandchild != 0) {
      (void)!::write(pid_w.get(), &grandchild, sizeof grandchild);
      _exit(0);
    }
    // racker ignores SIGPIPE; an ignored signal stays ignored across exec (and pasta
    // takes a SIGPIPE it finds ignored for a failure)
    ::signal(SIGPIPE, SIG_DFL);
    int null = ::open("/dev/null", O_RDWR);
    ::dup2(null, 0);
    ::dup2(log.get(), 1);
    ::dup2(log.get(), 2);
    ::execv(argv[0], argv.data());
    _exit(127);
  }
  pid_w.reset();
  while (::waitpid(child, nullptr, 0) < 0 && errno == EINTR) {
  }
  pid_t pasta_pid = -1;
  if (::read(pid_r.get(), &pasta_pid, sizeof pasta_pid) != sizeof pasta_pid || pasta_pid <= 0)
    throw Error("could not start pasta", ECHILD);
  auto alive = [&] {
    auto stat = read_file_if_exists("/proc/" + std::to_string(pasta_pid) + "/stat");
    if (!stat) return false;
    auto close = stat->rfind(')');
    return close != std::string::npos && close + 2 < stat->size() && (*stat)[close + 2] != 'Z';
  };
  for (int i = 0; i < 500 && alive(); ++i) {  // up to 5 s
    // pasta writes its pid file as it enters its event loop: until then a connection may
    // be started and lost
    if (!trim(read_file_if_exists(pid_file).value_or("")).empty() && uplink_ready(path)) {
      out.uplink = true;
      return;
    }
    ::usleep(10000);
  }
  if (alive()) ::kill(pasta_pid, SIGTERM);
  std::string line;
  for (auto& l : split(read_file_if_exists(log_file).value_or(""), '\n'))
    if (!trim(l).empty() && !l.starts_with("Failed to send")) line = trim(l);  // syslog noise
  if (line.find("External interface not usable") != std::string::npos) {
    // no uplink on the host (no default route): loopback only, as for root without a bridge
    log::debug("network: container " + id + " gets loopback only: pasta: " + line);
    return;
  }
  if (line.find("tun") != std::string::npos)
    line += " (/dev/net/tun must be open to you: udev makes it 0666 on most hosts)";
  throw Error("pasta could not connect the network namespace" +
                  (line.empty() ? std::string(" (no uplink after 5 s)") : ": " + line),
              EIO);
}

void stop_pasta(const std::string& root, const std::string& id) noexcept {
  std::string pid_file = pasta_pid_file(root, id);
  try {
    auto pid = parse_uint(trim(read_file(pid_file)));
    // its own pid file, written by the pasta we started; a recycled pid runs as someone else
    // only if it is not ours: check the name
    if (pid && *pid > 1) {
      std::string comm = trim(read_file("/proc/" + std::to_string(*pid) + "/comm"));
      if (comm == "pasta" || comm.starts_with("passt")) ::kill(static_cast<pid_t>(*pid), SIGTERM);
    }
  } catch (const Error&) {
  }
  ::unlink(pid_file.c_str());
  ::unlink((root + "/pasta/" + id + ".log").c_str());
}

}  // namespace

std::string net_root(const std::string& state_root) {
  std::string s = state_root;
  while (s.size() > 1 && s.back() == '/') s.pop_back();
  return s + "-net";
}

Attachment setup_private(const std::string& state_root, const std::string& id,
                         std::vector<PortMapping>* ports) {
  check_id(id);
  std::string root = net_root(state_root);
  mkdir_p(root + "/netns", 0711);
  Attachment out;
  std::exception_ptr failure;
  std::thread worker([&] {
    try {
      setup_in_thread(root, id, out);
    } catch (...) {
      failure = std::current_exception();
    }
  });
  worker.join();
  if (!failure && rootless()) {
    try {
      start_pasta(root, out.netns_path, id, out);
    } catch (...) {
      failure = std::current_exception();
    }
  }
  if (!failure && ports && !ports->empty()) {
    try {
      start_port_proxy(root, id, out.netns_path, *ports);
    } catch (...) {
      teardown(state_root, id);
      throw;  // its message names the -p it is about
    }
  }
  if (failure) {
    teardown(state_root, id);
    try {
      std::rethrow_exception(failure);
    } catch (const Error& e) {
      throw e.with_context("network namespace for " + id);
    }
  }
  return out;
}

void teardown(const std::string& state_root, const std::string& id) noexcept {
  try {
    check_id(id);
    stop_port_proxy(net_root(state_root), id);
    release_network(net_root(state_root), id, nullptr);
    stop_pasta(net_root(state_root), id);
  } catch (const std::exception& e) {
    log::debug("network: teardown of " + id + ": " + e.what());
  } catch (...) {
  }
}

void join_netns(nlohmann::json& config, const std::string& path) {
  auto& ns = config["linux"]["namespaces"];
  if (!ns.is_array()) ns = nlohmann::json::array();
  for (auto& n : ns)
    if (n.is_object() && n.value("type", "") == "network") {
      n["path"] = path;
      return;
    }
  ns.push_back({{"type", "network"}, {"path", path}});
}

std::string veth_name(const std::string& id) {
  std::string out = "rk";
  for (char c : id) {
    if (out.size() == 14) break;
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
    if (!ok) break;
    out.push_back(c);
  }
  if (out.size() == 14) return out;
  uint64_t h = 1469598103934665603ULL;  // FNV-1a
  for (unsigned char c : id) h = (h ^ c) * 1099511628211ULL;
  static const char* hex = "0123456789abcdef";
  out = "rk";
  for (int i = 0; i < 12; ++i) out.push_back(hex[(h >> (4 * i)) & 15]);
  return out;
}

}  // namespace racker::engine::net
