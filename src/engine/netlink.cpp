#include "engine/netlink.hpp"

#include <arpa/inet.h>
#include <net/if.h>  // before the kernel's headers: they then leave ifreq and IFF_* to glibc

#include <linux/if_addr.h>
#include <linux/if_link.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/veth.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstddef>
#include <cstring>

#include "base/error.hpp"

namespace racker::engine::net {

// --- NlMessage -----------------------------------------------------------------------------------

NlMessage::NlMessage(uint16_t type, uint16_t flags) {
  nlmsghdr h{};
  h.nlmsg_type = type;
  h.nlmsg_flags = static_cast<uint16_t>(NLM_F_REQUEST | NLM_F_ACK | flags);
  append(&h, sizeof h);
}

void NlMessage::attr(uint16_t type, const void* data, size_t len) {
  rtattr a{};
  a.rta_type = type;
  a.rta_len = static_cast<uint16_t>(RTA_LENGTH(len));
  append(&a, sizeof a);
  append(data, len);
}

size_t NlMessage::begin_nest(uint16_t type) {
  size_t at = buf_.size();
  attr(type, nullptr, 0);
  return at;
}

void NlMessage::end_nest(size_t at) {
  uint16_t len = static_cast<uint16_t>(buf_.size() - at);
  std::memcpy(buf_.data() + at + offsetof(rtattr, rta_len), &len, sizeof len);
}

std::string& NlMessage::finish(uint32_t seq) {
  auto* h = reinterpret_cast<nlmsghdr*>(buf_.data());
  h->nlmsg_len = static_cast<uint32_t>(buf_.size());
  h->nlmsg_seq = seq;
  return buf_;
}

void NlMessage::append(const void* data, size_t len) {
  if (len) buf_.append(static_cast<const char*>(data), len);
  buf_.resize(NLMSG_ALIGN(buf_.size()), '\0');
}

// --- Rtnl ----------------------------------------------------------------------------------------

Rtnl::Rtnl() {
  fd_.reset(::socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE));
  if (!fd_) throw_errno("open rtnetlink socket");
}

int Rtnl::request(NlMessage& msg) {
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

void Rtnl::call(NlMessage& msg, const std::string& what, int ok_err) {
  int err = request(msg);
  if (err != 0 && err != ok_err) throw_errno(what, err);
}

// --- requests ------------------------------------------------------------------------------------

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

namespace {

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

}  // namespace

void create_bridge(Rtnl& nl, const std::string& name, int mtu) {
  NlMessage m = new_link(name, mtu);
  size_t info = m.begin_nest(IFLA_LINKINFO);
  m.attr_str(IFLA_INFO_KIND, "bridge");
  m.end_nest(info);
  nl.call(m, "create bridge " + name, EEXIST);
}

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

}  // namespace racker::engine::net
