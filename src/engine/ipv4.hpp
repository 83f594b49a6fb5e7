// IPv4 addresses and subnets for the racker bridge: parsing and formatting, the host's routes,
// the choice of the bridge's subnet and the container addresses in it. Pure functions (unit
// tested); engine/network.hpp includes this header.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace racker::engine::net {

struct Ipv4Net {
  uint32_t addr = 0;  // host byte order
  int prefix = 0;
  uint32_t mask() const { return prefix == 0 ? 0 : ~uint32_t{0} << (32 - prefix); }
  bool operator==(const Ipv4Net&) const = default;
};

std::optional<uint32_t> parse_ipv4(std::string_view s);
std::string format_ipv4(uint32_t addr);
// "a.b.c.d/n" (a bare address is /32).
std::optional<Ipv4Net> parse_cidr(std::string_view s);
std::string format_cidr(const Ipv4Net& n);
bool overlaps(const Ipv4Net& a, const Ipv4Net& b);
// Destinations of the IPv4 routes in /proc/net/route text, without the default route and
// without routes through skip_dev (our own bridge).
std::vector<Ipv4Net> parse_proc_net_route(std::string_view text, std::string_view skip_dev);
// The first candidate subnet (10.213.0.0/16, then other private /16s) that overlaps none of
// routes; the bridge takes its .1 address.
std::optional<Ipv4Net> pick_subnet(const std::vector<Ipv4Net>& routes);
// The n-th container address of subnet (n = 0 is the first after the gateway): usable hosts
// are .2 up to the last before broadcast.
uint32_t host_count(const Ipv4Net& subnet);
uint32_t nth_host(const Ipv4Net& subnet, uint32_t n);

}  // namespace racker::engine::net
