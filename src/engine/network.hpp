// `--network private`: a network namespace of the container's own, with loopback and, where
// the host allows, a veth to the racker bridge (racker0, NAT to the host's uplink); and the
// /etc/resolv.conf such a container needs.
//
// Network state lives beside the runtime's state root, in <state_root>-net/ (e.g.
// /run/racker-net), never inside it: the runtime takes every directory of its root for a
// container. Its layout (netns/, leases/, attach/, lock) is engine/net_leases.hpp's; bridge
// holds the bridge's address and MTU (engine/bridge.hpp).
//
// The parts, by idea: engine/netlink (links, addresses and routes over rtnetlink, in process:
// no `ip` per container), engine/bridge (racker0, made once), engine/nat (the one-time NAT
// rule, the only part that runs iptables or nft), engine/net_leases (addresses and what each
// container holds), engine/resolv (resolv.conf), engine/ipv4 (address arithmetic). This
// module never fails a run for want of an uplink: without permission or bridge support the
// container keeps loopback only.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

// part of this API: the address helpers and the resolv.conf of a private network
#include "engine/ipv4.hpp"
#include "engine/ports.hpp"
#include "engine/resolv.hpp"

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
// first time. Throws racker::Error only when not even the namespace can be made, or when a
// published port (ports, -p: their host ports filled in as bound) cannot be had; uplink
// failures are logged (debug) and leave a loopback-only namespace.
Attachment setup_private(const std::string& state_root, const std::string& id,
                         std::vector<PortMapping>* ports = nullptr);

// Releases everything setup_private made for id: host veth, namespace mount, lease, port
// proxy. Safe to
// call more than once, for ids that never had a network, and after a crash halfway through
// setup. Never throws.
void teardown(const std::string& state_root, const std::string& id) noexcept;

// Points the spec's network namespace (linux.namespaces, type "network") at path, adding the
// entry when the spec has none.
void join_netns(nlohmann::json& config, const std::string& path);

// --- pure helpers (unit tested) ---

// The host end of id's veth: "rk" + 12 characters of the id (a hash when the id is not
// 12 or more alphanumerics), within IFNAMSIZ.
std::string veth_name(const std::string& id);

}  // namespace racker::engine::net
