#include "engine/ipv4.hpp"

#include <arpa/inet.h>

#include <cstdlib>

#include "base/strings.hpp"

namespace racker::engine::net {

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

}  // namespace racker::engine::net
