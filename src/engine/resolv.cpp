#include "engine/resolv.hpp"

#include <arpa/inet.h>

#include <cstdint>

#include "base/fs.hpp"
#include "base/strings.hpp"

namespace racker::engine::net {

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

}  // namespace racker::engine::net
