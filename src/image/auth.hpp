// Registry credentials files: containers-auth.json (podman/skopeo) and, read-only, Docker's
// ~/.docker/config.json. Entries are keyed by registry host ("host[:port]"); only the
// "auth" (base64 "user:password") form is understood. This module never talks to a registry.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace racker::image {

// Empty username = anonymous.
struct Credentials {
  std::string username;
  std::string password;
  bool empty() const { return username.empty() && password.empty(); }
};

// The file we read first and write to: authfile if given, else $REGISTRY_AUTH_FILE, else
// ${XDG_RUNTIME_DIR}/containers/auth.json, else /run/containers/<uid>/auth.json.
std::string primary_auth_file(const std::string& authfile = "");
// Files consulted by lookup_credentials, in order: the primary one, then ~/.docker/config.json.
std::vector<std::string> auth_file_search_path(const std::string& authfile = "");

// First entry for host in the search path; anonymous (empty) credentials when none. For
// docker.io the keys "docker.io", "index.docker.io" and "https://index.docker.io/v1/" match.
// Keys written as URLs ("https://host/v1/") match their host. Throws on unreadable/invalid
// files, naming the file.
Credentials lookup_credentials(const std::string& host, const std::string& authfile = "");
// Writes auths[host].auth into the primary file (atomically, mode 0600, parent dirs created),
// keeping every other entry and field.
void store_credentials(const std::string& host, const Credentials& creds,
                       const std::string& authfile = "");
// Removes host's entries (all docker.io aliases for docker.io) from the primary file; false
// when there was nothing to remove.
bool remove_credentials(const std::string& host, const std::string& authfile = "");

std::string base64_encode(std::string_view data);
// Standard alphabet, padding optional, whitespace not allowed; nullopt on junk.
std::optional<std::string> base64_decode(std::string_view text);

}  // namespace racker::image
