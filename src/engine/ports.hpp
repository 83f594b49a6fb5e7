// `-p/--publish`: host ports carried into a container's private network namespace, as
// docker-proxy does: racker binds the host side itself (so a port in use fails the run with
// one line), then a small detached process (`racker-ports`) that entered the container's
// network namespace accepts on those sockets and connects, inside the namespace, to the
// container's own address (its eth0's; 127.0.0.1 without one). Root's and an ordinary user's
// containers alike; the container sees connections from its own address.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace racker::engine {

struct PortMapping {
  std::string host_ip;          // "" = every IPv4 address (0.0.0.0)
  uint16_t host_port = 0;       // 0: the kernel picks one when it is bound
  uint16_t container_port = 0;  // 1..65535
  std::string proto = "tcp";    // tcp | udp

  nlohmann::json to_json() const;
  static PortMapping from_json(const nlohmann::json& j);
  bool operator==(const PortMapping&) const = default;
};

// docker's -p forms: [IP:][HOSTPORT:]PORT[/tcp|/udp], ports or equal-length ranges (A-B).
// Throws racker::Error (invalid) naming the spec and what is wrong.
std::vector<PortMapping> parse_publish(const std::string& spec);

// "0.0.0.0:8080->80/tcp" (docker ps' PORTS column).
std::string describe(const PortMapping& m);

// Binds every mapping's host side (filling in the ports the kernel picked) and starts the
// proxy into the network namespace at netns_path; its pid file lives under root (the network
// state directory). Throws a one-line racker::Error when a port cannot be bound or the proxy
// does not come up; then nothing is left.
void start_port_proxy(const std::string& root, const std::string& id, const std::string& netns_path,
                      std::vector<PortMapping>& ports);
// Stops id's proxy, if any. Never throws.
void stop_port_proxy(const std::string& root, const std::string& id) noexcept;

// The proxy's side (racker container port-proxy): status pipe at status_fd, one bound
// socket per spec ("tcp:80", "udp:53") from fd 4 on. Returns only on failure to start.
int port_proxy_main(int status_fd, const std::string& netns_path, const std::string& pid_file,
                    const std::vector<std::string>& specs);

}  // namespace racker::engine
