// Image references as docker's distribution/reference understands them:
// "[registry/]repository[:tag][@digest]", normalised the way docker and podman do
// ("debian" -> "docker.io/library/debian:latest"). Pure string handling: no I/O, and no
// knowledge of registries.conf (short-name search and mirrors live in registries.hpp).
#pragma once

#include <string>
#include <string_view>

namespace racker::image {

inline constexpr std::string_view kDockerHub = "docker.io";

struct Reference {
  std::string registry;         // "docker.io", "registry.suse.com", "localhost:5000", "[::1]:5000"
  std::string repository;       // "library/debian", "opensuse/tumbleweed", "bci/bci-base"
  std::string tag;              // "" when only a digest was given; "latest" by default otherwise
  std::string digest;           // "sha256:<hex>" or ""
  bool registry_given = false;  // the input named a registry host explicitly

  // registry + "/" + repository
  std::string name() const;
  // Canonical form: name[:tag][@digest].
  std::string str() const;
  // Docker's short form: "debian:bookworm", "opensuse/tumbleweed:latest"; other registries
  // keep their host ("registry.suse.com/bci/bci-base:15.4"). Parses back to the same reference.
  std::string familiar() const;

  bool operator==(const Reference&) const = default;
};

// Parses an image reference; an optional "docker://" transport prefix is accepted. The first
// path component is a registry host iff it contains '.' or ':' or is "localhost"; otherwise
// the registry is docker.io and a single-component repository gets "library/".
// Throws racker::Error (EINVAL) `invalid reference "<input>": <problem>`.
Reference parse_reference(std::string_view input);

// The rule above for a first path component: contains '.' or ':' or is "localhost".
bool looks_like_registry(std::string_view component);
// host[:port] per the distribution grammar: a domain name (letters, digits, '-' inside
// dot-separated components, so IPv4 too) or a bracketed IPv6 address, then an optional port.
bool is_valid_registry_host(std::string_view host);

}  // namespace racker::image
