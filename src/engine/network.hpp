// `--network private`: a network namespace of the container's own, with loopback and, where
// the host allows, a veth to the racker bridge (racker0, NAT to the host's uplink); and the
// /etc/resolv.conf such a container needs.
//
// Network state lives beside the runtime's state root, in <state_root>-net/ (e.g.
// /run/racker-net), never inside it: the runtime takes every directory of its root for a
// container.
//   netns/<id>        the namespace, kept alive by a bind mount (as `ip netns add` does)
//   leases/<a.b.c.d>  one file per address in use, holding the container id (O_EXCL: no lock)
//   attach/<id>       "<address>/<prefix> <host veth>": what teardown releases
//   bridge            "<bridge address>/<prefix> <mtu>", written once the bridge is up
//   lock              held while the bridge and NAT are set up
//
// Links, addresses and routes are made over rtnetlink in process (no `ip` per container);
// only the one-time NAT rule runs iptables (or nft). This module never fails a run for want of
// an uplink: without permission or bridge support the container keeps loopback only.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace racker::engine::net {

inline constexpr const char* kBridgeName = "racker0";

struct Attachment {
  std::string netns_path;  // <state_root>-net/netns/<id>, for linux.namespaces[].path
  std::string address;     // "10.213.x.y/16" on the container's eth0; empty without uplink
  std::string gateway;     // the bridge's address, the container's default route
  std::string host_veth;   // the host end of the veth, attached to the bridge
  bool uplink = false;     // eth0 exists; false: loopback only
};

// The directory that holds the network state for a runtime state root.
std::string net_root(const std::string& state_root);

// A fresh network namespace for container id with lo up and, where possible, eth0 on the
// racker bridge with an address and a default route. Creates the bridge and the NAT rule the
// first time. Throws racker::Error only when not even the namespace can be made; uplink
// failures are logged (debug) and leave a loopback-only namespace.
Attachment setup_private(const std::string& state_root, const std::string& id);

// Releases everything setup_private made for id: host veth, namespace mount, lease. Safe to
// call more than once, for ids that never had a network, and after a crash halfway through
// setup. Never throws.
void teardown(const std::string& state_root, const std::string& id) noexcept;

// Points the spec's network namespace (linux.namespaces, type "network") at path, adding the
// entry when the spec has none.
void join_netns(nlohmann::json& config, const std::string& path);

// The /etc/resolv.conf for a container in its own network namespace, from the host's
// /etc/resolv.conf and systemd-resolved's upstream list (/run/systemd/resolve/resolv.conf, when
// present): the host's file when none of its nameservers is a loopback address (a stub such as
// 127.0.0.53 is unreachable from another namespace), else resolved's list, else the host's
// file without its loopback nameservers and with public resolvers (8.8.8.8, 8.8.4.4) as docker
// does. The same file with or without an uplink.
std::string resolv_conf_for(std::string_view host, std::optional<std::string_view> resolved);
// The same from the files on this host.
std::string resolv_conf_for_host();

// --- pure helpers (unit tested) ---

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
// The host end of id's veth: "rk" + 12 characters of the id (a hash when the id is not
// 12 or more alphanumerics), within IFNAMSIZ.
std::string veth_name(const std::string& id);
// Whether a resolv.conf nameserver address is a loopback (127/8, ::1) or unspecified one.
bool is_loopback_nameserver(std::string_view addr);

}  // namespace racker::engine::net
