// The /etc/resolv.conf of a container in a network namespace of its own. engine/network.hpp
// includes this header.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace racker::engine::net {

// The /etc/resolv.conf for a container in its own network namespace, from the host's
// /etc/resolv.conf and systemd-resolved's upstream list (/run/systemd/resolve/resolv.conf, when
// present): the host's file when none of its nameservers is a loopback address (a stub such as
// 127.0.0.53 is unreachable from another namespace), else resolved's list, else the host's
// file without its loopback nameservers and with public resolvers (8.8.8.8, 8.8.4.4) as docker
// does. The same file with or without an uplink.
std::string resolv_conf_for(std::string_view host, std::optional<std::string_view> resolved);
// The same from the files on this host.
std::string resolv_conf_for_host();

// Whether a resolv.conf nameserver address is a loopback (127/8, ::1) or unspecified one.
bool is_loopback_nameserver(std::string_view addr);

}  // namespace racker::engine::net
