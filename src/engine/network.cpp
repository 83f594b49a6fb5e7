#include "engine/network.hpp"

#include <arpa/inet.h>
#include <net/if.h>  // before the kernel's headers: they then leave ifreq and IFF_* to glibc

#include <dirent.h>
#include <fcntl.h>
#include <linux/if_addr.h>
#include <linux/if_link.h>
#include <linux/magic.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/veth.h>
#include <sched.h>
#include <spawn.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <exception>
#include <random>
#include <thread>

#include "base/error.hpp"
#include "base/fd.hpp"
#include "base/file_lock.hpp"
#include "base/fs.hpp"
#include "base/log.hpp"
#include "base/strings.hpp"

extern char** environ;

namespace racker::engine::net {
namespace {

// --- rtnetlink ---------------------------------------------------------------------------------

// One request message: nlmsghdr, a fixed header (ifinfomsg, ifaddrmsg, rtmsg) and attributes,
// nested ones included. Offsets, not pointers: the buffer grows.
class NlMessage {
 public:
  NlMessage(uint16_t type, uint16_t flags) {
    nlmsghdr h{};
    h.nlmsg_type = type;
    h.nlmsg_flags = static_cast<uint16_t>(NLM_F_REQUEST | NLM_F_ACK | flags);
    append(&h, sizeof h);
  }
  template <class T>
  void header(const T& h) {
    append(&h, sizeof h);
  }
  void attr(uint16_t type, const void* data, size_t len) {
    rtattr a{};
    a.rta_type = type;
    a.rta_len = static_cast<uint16_t>(RTA_LENGTH(len));
    append(&a, sizeof a);
    append(data, len);
  }
  void attr_str(uint16_t type, const std::string& s) { attr(type, s.c_str(), s.size() + 1); }
  void attr_u32(uint16_t type, uint32_t v) { attr(type, &v, sizeof v); }
  size_t begin_nest(uint16_t type) {
    size_t at = buf_.size();
    attr(type, nullptr, 0);
    return at;
  }
  void end_nest(size_t at) {
    uint16_t len = static_cast<uint16_t>(buf_.size() - at);
    std::memcpy(buf_.data() + at + offsetof(rtattr, rta_len), &len, sizeof len);
  }
  std::string& finish(uint32_t seq) {
    auto* h = reinterpret_cast<nlmsghdr*>(buf_.data());
    h->nlmsg_len = static_cast<uint32_t>(buf_.size());
    h->nlmsg_seq = seq;
    return buf_;
  }

 private:
  void append(const void* data, size_t len) {
    if (len) buf_.append(static_cast<const char*>(data), len);
    buf_.resize(NLMSG_ALIGN(buf_.size()), '\0');
  }
  std::string buf_;
};

// A NETLINK_ROUTE socket. It stays bound to the network namespace it was opened in, whatever
// namespace the thread that uses it later is in.
class Rtnl {
 public:
  Rtnl() {
    fd_.reset(::socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE));
    if (!fd_) throw_errno("open rtnetlink socket");
  }

  // Sends msg and waits for its acknowledgement; returns 0 or the (positive) errno.
  int request(NlMessage& msg) {
    auto& data = msg.finish(++seq_);
    sockaddr_nl kernel{};
    kernel.nl_family = AF_NETLINK;
    while (::sendto(fd_.get(), data.data(), data.size(), 0, reinterpret_cast<sockaddr*>(&kernel),
                    sizeof kernel) < 0)
      if (errno != EINTR) return errno;
    alignas(nlmsghdr) char buf[8192];
    while (true) {
      ssize_t n = ::recv(fd_.get(), buf, sizeof buf, 0);
      if (n < 0) {
        if (errno == EINTR) continue;
        return errno;
      }
      size_t left = static_cast<size_t>(n);
      for (auto* h = reinterpret_cast<nlmsghdr*>(buf); NLMSG_OK(h, left); h = NLMSG_NEXT(h, left)) {
        if (h->nlmsg_seq != seq_ || h->nlmsg_type != NLMSG_ERROR) continue;
        auto* e = static_cast<nlmsgerr*>(NLMSG_DATA(h));
        return -e->error;
      }
    }
  }

  // Like request, but throws Error("what: strerror") unless it succeeds (or fails with ok_err).
  void call(NlMessage& msg, const std::string& what, int ok_err = 0) {
    int err = request(msg);
    if (err != 0 && err != ok_err) throw_errno(what, err);
  }

 private:
  UniqueFd fd_;
  uint32_t seq_ = 0;
};

void link_up(Rtnl& nl, int ifindex, const std::string& name) {
  NlMessage m(RTM_NEWLINK, 0);
  ifinfomsg i{};
  i.ifi_family = AF_UNSPEC;
  i.ifi_index = ifindex;
  i.ifi_flags = IFF_UP;
  i.ifi_change = IFF_UP;
  m.header(i);
  nl.call(m, "set " + name + " up");
}

void add_address(Rtnl& nl, int ifindex, const Ipv4Net& net, const std::string& dev) {
  NlMessage m(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL);
  ifaddrmsg a{};
  a.ifa_family = AF_INET;
  a.ifa_prefixlen = static_cast<uint8_t>(net.prefix);
  a.ifa_scope = RT_SCOPE_UNIVERSE;
  a.ifa_index = static_cast<uint32_t>(ifindex);
  m.header(a);
  uint32_t local = htonl(net.addr);
  uint32_t brd = htonl(net.addr | ~net.mask());
  m.attr(IFA_LOCAL, &local, 4);
  m.attr(IFA_ADDRESS, &local, 4);
  m.attr(IFA_BROADCAST, &brd, 4);
  // the bridge keeps its address across racker runs: an existing one is fine
  nl.call(m, "add address " + format_cidr(net) + " to " + dev, EEXIST);
}

void add_default_route(Rtnl& nl, int ifindex, uint32_t gateway) {
  NlMessage m(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL);
  rtmsg r{};
  r.rtm_family = AF_INET;
  r.rtm_table = RT_TABLE_MAIN;
  r.rtm_protocol = RTPROT_BOOT;
  r.rtm_scope = RT_SCOPE_UNIVERSE;
  r.rtm_type = RTN_UNICAST;
  r.rtm_flags = RTNH_F_ONLINK;  // the gateway is on eth0's subnet; skip the reachability check
  m.header(r);
  uint32_t gw = htonl(gateway);
  m.attr(RTA_GATEWAY, &gw, 4);
  m.attr_u32(RTA_OIF, static_cast<uint32_t>(ifindex));
  nl.call(m, "add default route via " + format_ipv4(gateway));
}

// The start of an RTM_NEWLINK that creates link `name`, up, with the given MTU.
NlMessage new_link(const std::string& name, int mtu) {
  NlMessage m(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL);
  ifinfomsg i{};
  i.ifi_family = AF_UNSPEC;
  i.ifi_flags = IFF_UP;
  i.ifi_change = IFF_UP;
  m.header(i);
  m.attr_str(IFLA_IFNAME, name);
  m.attr_u32(IFLA_MTU, static_cast<uint32_t>(mtu));
  return m;
}

void create_bridge(Rtnl& nl, int mtu) {
  NlMessage m = new_link(kBridgeName, mtu);
  size_t info = m.begin_nest(IFLA_LINKINFO);
  m.attr_str(IFLA_INFO_KIND, "bridge");
  m.end_nest(info);
  nl.call(m, std::string("create bridge ") + kBridgeName, EEXIST);
}

// A veth pair: host_name on the host, enslaved to the bridge; its peer "eth0" created straight
// in the namespace netns_fd. The host end is up, the peer is not.
void create_veth(Rtnl& nl, const std::string& host_name, int bridge_index, int netns_fd, int mtu) {
  NlMessage m = new_link(host_name, mtu);
  m.attr_u32(IFLA_MASTER, static_cast<uint32_t>(bridge_index));
  size_t info = m.begin_nest(IFLA_LINKINFO);
  m.attr_str(IFLA_INFO_KIND, "veth");
  size_t data = m.begin_nest(IFLA_INFO_DATA);
  size_t peer = m.begin_nest(VETH_INFO_PEER);
  // not up yet: the kernel opens the peer before pairing it (ENOTCONN)
  ifinfomsg p{};
  p.ifi_family = AF_UNSPEC;
  m.header(p);
  m.attr_str(IFLA_IFNAME, "eth0");
  m.attr_u32(IFLA_MTU, static_cast<uint32_t>(mtu));
  m.attr_u32(IFLA_NET_NS_FD, static_cast<uint32_t>(netns_fd));
  m.end_nest(peer);
  m.end_nest(data);
  m.end_nest(info);
  nl.call(m, "create veth " + host_name);
}

// 0, or the errno (ENODEV: no such link).
int delete_link(Rtnl& nl, const std::string& name) {
  NlMessage m(RTM_DELLINK, 0);
  ifinfomsg i{};
  i.ifi_family = AF_UNSPEC;
  m.header(i);
  m.attr_str(IFLA_IFNAME, name);
  return nl.request(m);
}

// --- files ---------------------------------------------------------------------------------------

void check_id(const std::string& id) {
  if (id.empty() || id == "." || id == ".." || id.find('/') != std::string::npos)
    throw Error("invalid container id \"" + id + "\" for a network namespace", EINVAL);
}

bool is_nsfs_mount(const std::string& path) {
  struct statfs s {};
  return ::statfs(path.c_str(), &s) == 0 && static_cast<unsigned long>(s.f_type) == NSFS_MAGIC;
}

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

// MASQUERADE for the subnet's traffic leaving through any other interface, and forwarding to
// and from the bridge allowed even where FORWARD's policy drops (docker sets that). Checked
// before added, so repeating it adds nothing. iptables first (it shares tables with docker and
// firewalld's iptables rules), nft where iptables is missing.
bool install_nat(const Ipv4Net& subnet) {
  std::string src = format_cidr({subnet.addr & subnet.mask(), subnet.prefix});
  std::vector<std::vector<std::string>> rules = {
      {"-t", "nat", "POSTROUTING", "-s", src, "!", "-o", kBridgeName, "-j", "MASQUERADE"},
      {"-t", "filter", "FORWARD", "-i", kBridgeName, "-j", "ACCEPT"},
      {"-t", "filter", "FORWARD", "-o", kBridgeName, "-m", "conntrack", "--ctstate",
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
      src + " oifname != \"" + kBridgeName +
      "\" masquerade\n"
      "  }\n}\n";
  auto file = anonymous_file("/tmp");
  if (!write_all(file.get(), script.data(), script.size())) return false;
  // the child does not inherit the (close-on-exec) fd, but may open it through our /proc
  std::string path = "/proc/" + std::to_string(::getpid()) + "/fd/" + std::to_string(file.get());
  return run_quiet({"nft", "-f", path}) == 0;
}

int uplink_mtu() {
  // the device of the default route; a container's packets leave through it after NAT
  auto routes = read_file_if_exists("/proc/net/route").value_or("");
  for (auto& line : split(routes, '\n')) {
    auto f = split(line, '\t');
    if (f.size() > 7 && f[1] == "00000000" && trim(f[7]) == "00000000") {
      auto mtu =
          parse_uint(trim(read_file_if_exists("/sys/class/net/" + f[0] + "/mtu").value_or("")));
      if (mtu && *mtu >= 576 && *mtu < 1500) return static_cast<int>(*mtu);
    }
  }
  return 1500;
}

struct Bridge {
  Ipv4Net net;  // the bridge's own address and prefix (the containers' gateway)
  int mtu = 1500;
  int index = 0;
};

std::optional<Bridge> read_bridge_file(const std::string& root) {
  auto text = read_file_if_exists(root + "/bridge");
  if (!text) return std::nullopt;
  auto f = split(trim(*text), ' ');
  if (f.size() != 2) return std::nullopt;
  auto net = parse_cidr(f[0]);
  auto mtu = parse_uint(f[1]);
  if (!net || !mtu) return std::nullopt;
  return Bridge{*net, static_cast<int>(*mtu), 0};
}

// The IPv4 address and prefix the bridge already has (made by an earlier racker whose state
// file is gone), through the ioctls that need no dump parsing.
std::optional<Ipv4Net> bridge_address() {
  UniqueFd s(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (!s) return std::nullopt;
  ifreq r{};
  std::strncpy(r.ifr_name, kBridgeName, IFNAMSIZ - 1);
  if (::ioctl(s.get(), SIOCGIFADDR, &r) != 0) return std::nullopt;
  uint32_t addr = ntohl(reinterpret_cast<sockaddr_in*>(&r.ifr_addr)->sin_addr.s_addr);
  if (::ioctl(s.get(), SIOCGIFNETMASK, &r) != 0) return std::nullopt;
  uint32_t mask = ntohl(reinterpret_cast<sockaddr_in*>(&r.ifr_netmask)->sin_addr.s_addr);
  return Ipv4Net{addr, __builtin_popcount(mask)};
}

// Leases whose namespace is no longer mounted (a reboot with a persistent /run, a namespace
// unmounted by hand) are released. setup_private mounts the namespace before taking a lease,
// so a live container's lease always has its mount.
void release_stale(const std::string& state_root, const std::string& root) {
  DIR* d = ::opendir((root + "/attach").c_str());
  if (!d) return;
  std::vector<std::string> stale;
  while (auto* e = ::readdir(d)) {
    std::string id = e->d_name;
    if (id == "." || id == ".." || id.find(".tmp") != std::string::npos) continue;
    if (!is_nsfs_mount(root + "/netns/" + id)) stale.push_back(id);
  }
  ::closedir(d);
  for (auto& id : stale) {
    log::debug("network: releasing stale lease of " + id);
    teardown(state_root, id);
  }
}

// The bridge, its address and NAT: made once, under the lock; later calls find the state file
// and the link.
Bridge ensure_bridge(Rtnl& host, const std::string& state_root, const std::string& root) {
  if (auto b = read_bridge_file(root)) {
    b->index = static_cast<int>(::if_nametoindex(kBridgeName));
    if (b->index > 0) return *b;
  }
  FileLock lock(root + "/lock");
  auto known = read_bridge_file(root);
  int index = static_cast<int>(::if_nametoindex(kBridgeName));
  if (known && index > 0) return {known->net, known->mtu, index};
  release_stale(state_root, root);
  Bridge b;
  b.mtu = uplink_mtu();
  std::optional<Ipv4Net> existing = index > 0 ? bridge_address() : std::nullopt;
  if (existing) {
    b.net = *existing;
  } else {
    auto routes =
        parse_proc_net_route(read_file_if_exists("/proc/net/route").value_or(""), kBridgeName);
    auto subnet = pick_subnet(routes);
    if (!subnet) throw Error("no free private subnet for the racker bridge", EADDRINUSE);
    b.net = {subnet->addr | 1, subnet->prefix};
  }
  if (index <= 0) {
    create_bridge(host, b.mtu);
    index = static_cast<int>(::if_nametoindex(kBridgeName));
    if (index <= 0) throw_errno(std::string("find bridge ") + kBridgeName);
  }
  b.index = index;
  add_address(host, index, b.net, kBridgeName);
  link_up(host, index, kBridgeName);
  try {
    auto fwd = trim(read_file_if_exists("/proc/sys/net/ipv4/ip_forward").value_or("1"));
    if (fwd != "1") write_file("/proc/sys/net/ipv4/ip_forward", "1");
  } catch (const Error& e) {
    log::debug(std::string("network: cannot enable ip_forward: ") + e.what());
  }
  if (!install_nat(b.net))
    log::debug(
        "network: no NAT rule (neither iptables nor nft worked): containers reach the "
        "host and each other only");
  write_file_atomic(root + "/bridge", format_cidr(b.net) + " " + std::to_string(b.mtu) + "\n");
  return b;
}

// Takes a free address of the bridge's subnet for id: leases/<address> created O_EXCL, from a
// random starting point (a just-released address is rarely handed out again at once, so stale
// neighbour entries do not matter).
uint32_t take_lease(const std::string& root, const Bridge& b, const std::string& id) {
  Ipv4Net subnet{b.net.addr & b.net.mask(), b.net.prefix};
  uint32_t n = host_count(subnet);
  if (n == 0) throw Error("subnet " + format_cidr(subnet) + " has no room", ENOSPC);
  uint32_t start = std::random_device{}() % n;
  for (uint32_t k = 0; k < n; ++k) {
    uint32_t addr = nth_host(subnet, (start + k) % n);
    if (addr == b.net.addr) continue;
    std::string path = root + "/leases/" + format_ipv4(addr);
    UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
    if (!fd) {
      if (errno == EEXIST) continue;
      throw_errno("create lease " + path);
    }
    if (!write_all(fd.get(), id.data(), id.size())) throw_errno("write lease " + path);
    return addr;
  }
  throw Error("no free address in " + format_cidr(subnet), ENOSPC);
}

void release_lease(const std::string& root, const std::string& address, const std::string& id) {
  std::string path = root + "/leases/" + address;
  // only our own: a lease released twice may meanwhile belong to someone else
  if (read_file_if_exists(path) == id) ::unlink(path.c_str());
}

// The uplink half of setup_private, run in the new namespace's thread: lease, veth, eth0's
// address and default route.
void attach_uplink(Rtnl& host, Rtnl& ns, const Bridge& b, const std::string& root,
                   const std::string& id, Attachment& out) {
  mkdir_p(root + "/leases", 0700);
  mkdir_p(root + "/attach", 0700);
  uint32_t addr = take_lease(root, b, id);
  Ipv4Net mine{addr, b.net.prefix};
  std::string veth = veth_name(id);
  // teardown finds what to release here, even after a crash halfway through
  write_file_atomic(root + "/attach/" + id, format_cidr(mine) + " " + veth + "\n", 0600);
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
    release_lease(root, format_ipv4(addr), id);
    ::unlink((root + "/attach/" + id).c_str());
    throw;
  }
  out.address = format_cidr(mine);
  out.gateway = format_ipv4(b.net.addr);
  out.host_veth = veth;
  out.uplink = true;
}

// Runs in a thread of its own: unsharing the network namespace moves only the calling thread,
// and the thread's end drops it (the bind mount keeps the namespace).
void setup_in_thread(const std::string& state_root, const std::string& root, const std::string& id,
                     Attachment& out) {
  Rtnl host;  // opened before unshare: stays in the host's namespace
  std::optional<Bridge> bridge;
  try {
    bridge = ensure_bridge(host, state_root, root);  // if_nametoindex: still in the host's
  } catch (const Error& e) {
    log::debug("network: container " + id + " gets loopback only: " + e.what());
  }
  std::string path = root + "/netns/" + id;
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

}  // namespace

std::string net_root(const std::string& state_root) {
  std::string s = state_root;
  while (s.size() > 1 && s.back() == '/') s.pop_back();
  return s + "-net";
}

Attachment setup_private(const std::string& state_root, const std::string& id) {
  check_id(id);
  std::string root = net_root(state_root);
  mkdir_p(root + "/netns", 0711);
  Attachment out;
  std::exception_ptr failure;
  std::thread worker([&] {
    try {
      setup_in_thread(state_root, root, id, out);
    } catch (...) {
      failure = std::current_exception();
    }
  });
  worker.join();
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
    std::string root = net_root(state_root);
    std::string attach = root + "/attach/" + id;
    std::string ns = root + "/netns/" + id;
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
    auto record = read_file_if_exists(attach);
    if (!record) return;
    auto f = split(trim(*record), ' ');
    std::string veth = f.size() == 2 ? f[1] : veth_name(id);
    if (!unmounted && ::if_nametoindex(veth.c_str()) != 0) {
      Rtnl host;
      int err = delete_link(host, veth);
      if (err != 0 && err != ENODEV)
        log::debug("network: delete veth " + veth + " of " + id + ": " + std::strerror(err));
    }
    if (auto net = parse_cidr(f[0])) release_lease(root, format_ipv4(net->addr), id);
    ::unlink(attach.c_str());
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

// --- resolv.conf ---------------------------------------------------------------------------------

namespace {

// The address of a "nameserver ADDR" line; nullopt for any other line.
std::optional<std::string> nameserver_of(std::string_view line) {
  auto t = trim(line);
  if (!t.starts_with("nameserver") || t.size() < 12 || (t[10] != ' ' && t[10] != '\t'))
    return std::nullopt;
  auto f = trim(std::string_view(t).substr(11));
  return f.substr(0, f.find_first_of(" \t"));
}

struct Nameservers {
  int total = 0;
  int loopback = 0;
};

Nameservers count_nameservers(std::string_view text) {
  Nameservers n;
  for (auto& line : split(text, '\n')) {
    auto addr = nameserver_of(line);
    if (!addr) continue;
    ++n.total;
    if (is_loopback_nameserver(*addr)) ++n.loopback;
  }
  return n;
}

}  // namespace

bool is_loopback_nameserver(std::string_view addr) {
  std::string a(addr);
  if (auto pct = a.find('%'); pct != std::string::npos) a.resize(pct);  // fe80::1%eth0
  in_addr v4{};
  if (::inet_pton(AF_INET, a.c_str(), &v4) == 1) {
    uint32_t h = ntohl(v4.s_addr);
    return (h >> 24) == 127 || h == 0;
  }
  in6_addr v6{};
  if (::inet_pton(AF_INET6, a.c_str(), &v6) == 1) {
    if (IN6_IS_ADDR_LOOPBACK(&v6) || IN6_IS_ADDR_UNSPECIFIED(&v6)) return true;
    if (IN6_IS_ADDR_V4MAPPED(&v6)) return v6.s6_addr[12] == 127;
  }
  return false;
}

std::string resolv_conf_for(std::string_view host, std::optional<std::string_view> resolved) {
  auto h = count_nameservers(host);
  if (h.total > 0 && h.loopback == 0) return std::string(host);
  if (resolved) {
    auto r = count_nameservers(*resolved);
    if (r.total > 0 && r.loopback == 0) return std::string(*resolved);
  }
  std::string out;
  int kept = 0;
  for (auto& line : split(host, '\n')) {
    if (auto addr = nameserver_of(line)) {
      if (is_loopback_nameserver(*addr)) continue;
      ++kept;
    }
    out += line;
    out += '\n';
  }
  while (out.ends_with("\n\n")) out.pop_back();
  if (out == "\n") out.clear();
  if (kept == 0) {
    if (!out.empty())
      out += "# the host's nameservers are loopback addresses; public ones instead\n";
    out += "nameserver 8.8.8.8\nnameserver 8.8.4.4\n";
  }
  return out;
}

std::string resolv_conf_for_host() {
  auto host = read_file_if_exists("/etc/resolv.conf").value_or("");
  auto resolved = read_file_if_exists("/run/systemd/resolve/resolv.conf");
  return resolv_conf_for(host,
                         resolved ? std::optional<std::string_view>(*resolved) : std::nullopt);
}

// --- pure helpers ----------------------------------------------------------------------------

std::optional<uint32_t> parse_ipv4(std::string_view s) {
  auto parts = split(s, '.');
  if (parts.size() != 4) return std::nullopt;
  uint32_t out = 0;
  for (auto& p : parts) {
    if (p.empty() || p.size() > 3) return std::nullopt;
    auto v = parse_uint(p);
    if (!v || *v > 255) return std::nullopt;
    out = out << 8 | static_cast<uint32_t>(*v);
  }
  return out;
}

std::string format_ipv4(uint32_t a) {
  return std::to_string(a >> 24) + "." + std::to_string((a >> 16) & 255) + "." +
         std::to_string((a >> 8) & 255) + "." + std::to_string(a & 255);
}

std::optional<Ipv4Net> parse_cidr(std::string_view s) {
  auto slash = s.find('/');
  auto addr = parse_ipv4(s.substr(0, slash));
  if (!addr) return std::nullopt;
  if (slash == std::string_view::npos) return Ipv4Net{*addr, 32};
  auto p = parse_uint(s.substr(slash + 1));
  if (!p || *p > 32 || s.size() == slash + 1) return std::nullopt;
  return Ipv4Net{*addr, static_cast<int>(*p)};
}

std::string format_cidr(const Ipv4Net& n) {
  return format_ipv4(n.addr) + "/" + std::to_string(n.prefix);
}

bool overlaps(const Ipv4Net& a, const Ipv4Net& b) {
  uint32_t m = a.prefix < b.prefix ? a.mask() : b.mask();
  return (a.addr & m) == (b.addr & m);
}

std::vector<Ipv4Net> parse_proc_net_route(std::string_view text, std::string_view skip_dev) {
  std::vector<Ipv4Net> out;
  auto lines = split(text, '\n');
  for (size_t i = 1; i < lines.size(); ++i) {  // line 0: column names
    auto f = split(lines[i], '\t');
    if (f.size() < 8 || trim(f[0]) == skip_dev) continue;
    // little-endian hex of the network-order address, as the kernel prints it
    auto dst = std::strtoul(trim(f[1]).c_str(), nullptr, 16);
    auto mask = std::strtoul(trim(f[7]).c_str(), nullptr, 16);
    uint32_t d = ntohl(static_cast<uint32_t>(dst)), m = ntohl(static_cast<uint32_t>(mask));
    if (m == 0) continue;  // default route
    out.push_back({d, __builtin_popcount(m)});
  }
  return out;
}

std::optional<Ipv4Net> pick_subnet(const std::vector<Ipv4Net>& routes) {
  static const char* candidates[] = {"10.213.0.0/16",   "10.214.0.0/16", "10.215.0.0/16",
                                     "10.216.0.0/16",   "172.29.0.0/16", "172.30.0.0/16",
                                     "192.168.213.0/24"};
  for (auto* c : candidates) {
    auto net = *parse_cidr(c);
    bool free = true;
    for (auto& r : routes) free = free && !overlaps(net, r);
    if (free) return net;
  }
  return std::nullopt;
}

uint32_t host_count(const Ipv4Net& subnet) {
  if (subnet.prefix > 30) return 0;
  return (~subnet.mask()) - 2;  // without network, gateway (.1) and broadcast
}

uint32_t nth_host(const Ipv4Net& subnet, uint32_t n) {
  return (subnet.addr & subnet.mask()) + 2 + n;
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
