#include "engine/network.hpp"

#include <net/if.h>

#include <fcntl.h>
#include <sched.h>
#include <sys/mount.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <exception>
#include <optional>
#include <thread>

#include "base/error.hpp"
#include "base/fd.hpp"
#include "base/fs.hpp"
#include "base/log.hpp"
#include "engine/bridge.hpp"
#include "engine/net_leases.hpp"
#include "engine/netlink.hpp"

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
  try {
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
      setup_in_thread(root, id, out);
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
    release_network(net_root(state_root), id, nullptr);
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
