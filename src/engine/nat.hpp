// NAT for the racker bridge's subnet: the one-time MASQUERADE and FORWARD rules (iptables, or
// nft where iptables is missing) and IPv4 forwarding. The only part of the network that runs
// other programs.
#pragma once

#include <string>

#include "engine/ipv4.hpp"

namespace racker::engine::net {

// MASQUERADE for the subnet's traffic leaving through any interface but bridge, and
// forwarding to and from bridge allowed even where FORWARD's policy drops (docker sets that).
// Checked before added, so repeating it adds nothing. iptables first (it shares tables with
// docker and firewalld's iptables rules), nft where iptables is missing. False when neither
// installed the MASQUERADE rule.
bool install_nat(const Ipv4Net& subnet, const std::string& bridge);

// Turns on net.ipv4.ip_forward where it is off; failing to is logged (debug).
void enable_ip_forward();

}  // namespace racker::engine::net
