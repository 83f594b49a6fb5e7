#include "engine/bridge.hpp"

#include <arpa/inet.h>
#include <net/if.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <optional>

#include "base/error.hpp"
#include "base/fd.hpp"
#include "base/fs.hpp"
#include "base/log.hpp"
#include "base/strings.hpp"
#include "engine/nat.hpp"
#include "engine/net_leases.hpp"
#include "engine/network.hpp"

namespace racker::engine::net {
namespace {

// The MTU of the uplink (at most 1500): the containers' veths get it.
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

}  // namespace

Bridge ensure_bridge(Rtnl& host, const std::string& root) {
  if (auto b = read_bridge_file(root)) {
    b->index = static_cast<int>(::if_nametoindex(kBridgeName));
    if (b->index > 0) return *b;
  }
  NetLock lock(root);
  auto known = read_bridge_file(root);
  int index = static_cast<int>(::if_nametoindex(kBridgeName));
  if (known && index > 0) return {known->net, known->mtu, index};
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
    create_bridge(host, kBridgeName, b.mtu);
    index = static_cast<int>(::if_nametoindex(kBridgeName));
    if (index <= 0) throw_errno(std::string("find bridge ") + kBridgeName);
  }
  b.index = index;
  add_address(host, index, b.net, kBridgeName);
  link_up(host, index, kBridgeName);
  enable_ip_forward();
  if (!install_nat(b.net, kBridgeName))
    log::debug(
        "network: no NAT rule (neither iptables nor nft worked): containers reach the "
        "host and each other only");
  write_file_atomic(root + "/bridge", format_cidr(b.net) + " " + std::to_string(b.mtu) + "\n");
  return b;
}

}  // namespace racker::engine::net
