// The racker bridge (racker0): made once, with its address, MTU and NAT, then found again by
// every later run through <root>/bridge ("<bridge address>/<prefix> <mtu>", written once the
// bridge is up) and the link itself.
#pragma once

#include <string>

#include "engine/ipv4.hpp"
#include "engine/netlink.hpp"

namespace racker::engine::net {

struct Bridge {
  Ipv4Net net;  // the bridge's own address and prefix (the containers' gateway)
  int mtu = 1500;
  int index = 0;
};

// The bridge, its address and NAT: made once, under the NetLock of root; later calls find the
// state file and the link. Throws Error when the bridge cannot be made.
Bridge ensure_bridge(Rtnl& host, const std::string& root);

}  // namespace racker::engine::net
