// Links, addresses and routes over rtnetlink, in process (no `ip` per container): the racker
// bridge, a container's veth pair, eth0's address and default route.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "base/fd.hpp"
#include "engine/ipv4.hpp"

namespace racker::engine::net {

// One request message: nlmsghdr, a fixed header (ifinfomsg, ifaddrmsg, rtmsg) and attributes,
// nested ones included. Offsets, not pointers: the buffer grows.
class NlMessage {
 public:
  NlMessage(uint16_t type, uint16_t flags);
  template <class T>
  void header(const T& h) {
    append(&h, sizeof h);
  }
  void attr(uint16_t type, const void* data, size_t len);
  void attr_str(uint16_t type, const std::string& s) { attr(type, s.c_str(), s.size() + 1); }
  void attr_u32(uint16_t type, uint32_t v) { attr(type, &v, sizeof v); }
  size_t begin_nest(uint16_t type);
  void end_nest(size_t at);
  std::string& finish(uint32_t seq);

 private:
  void append(const void* data, size_t len);
  std::string buf_;
};

// A NETLINK_ROUTE socket. It stays bound to the network namespace it was opened in, whatever
// namespace the thread that uses it later is in.
class Rtnl {
 public:
  Rtnl();
  // Sends msg and waits for its acknowledgement; returns 0 or the (positive) errno.
  int request(NlMessage& msg);
  // Like request, but throws Error("what: strerror") unless it succeeds (or fails with ok_err).
  void call(NlMessage& msg, const std::string& what, int ok_err = 0);

 private:
  UniqueFd fd_;
  uint32_t seq_ = 0;
};

void link_up(Rtnl& nl, int ifindex, const std::string& name);
// An existing address is fine (the bridge keeps its address across racker runs).
void add_address(Rtnl& nl, int ifindex, const Ipv4Net& net, const std::string& dev);
void add_default_route(Rtnl& nl, int ifindex, uint32_t gateway);
// A bridge `name`, up, with the given MTU; an existing one is fine.
void create_bridge(Rtnl& nl, const std::string& name, int mtu);
// A veth pair: host_name on the host, enslaved to the bridge; its peer "eth0" created straight
// in the namespace netns_fd. The host end is up, the peer is not.
void create_veth(Rtnl& nl, const std::string& host_name, int bridge_index, int netns_fd, int mtu);
// 0, or the errno (ENODEV: no such link).
int delete_link(Rtnl& nl, const std::string& name);

}  // namespace racker::engine::net
