#include "image/auth.hpp"

#include <fcntl.h>
#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <nlohmann/json.hpp>

#include "base/error.hpp"
#include "base/fd.hpp"
#include "base/fs.hpp"

namespace racker::image {

namespace {

using nlohmann::json;

const char* kB64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

std::string env(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "";
}

std::string home_dir() {
  std::string h = env("HOME");
  if (!h.empty()) return h;
  if (auto* pw = ::getpwuid(::getuid())) return pw->pw_dir;
  return "/root";
}

bool is_docker_hub(std::string_view host) {
  return host == "docker.io" || host == "index.docker.io" || host == "registry-1.docker.io";
}

// "https://index.docker.io/v1/" -> "index.docker.io"; "host:5000" stays.
std::string key_host(std::string_view key) {
  if (auto p = key.find("://"); p != std::string_view::npos) key.remove_prefix(p + 3);
  if (auto p = key.find('/'); p != std::string_view::npos) key = key.substr(0, p);
  return std::string(key);
}

bool key_matches(std::string_view key, std::string_view host) {
  std::string kh = key_host(key);
  if (is_docker_hub(host)) return is_docker_hub(kh);
  return kh == host;
}

std::string canonical_host(const std::string& host) {
  return is_docker_hub(host) ? "docker.io" : host;
}

std::optional<json> load(const std::string& path) {
  auto text = read_file_if_exists(path);
  if (!text) return std::nullopt;
  if (text->find_first_not_of(" \t\r\n") == std::string::npos) return json::object();
  json j = json::parse(*text, nullptr, false);
  if (j.is_discarded() || !j.is_object())
    throw Error("parse " + path + ": not a valid JSON object", EINVAL);
  return j;
}

// The credentials of one "auths" entry, nullopt when it has none.
std::optional<Credentials> entry_credentials(const json& e, const std::string& path,
                                             const std::string& key) {
  if (!e.is_object()) return std::nullopt;
  if (auto a = e.find("auth"); a != e.end() && a->is_string() && !a->get<std::string>().empty()) {
    auto decoded = base64_decode(a->get<std::string>());
    size_t colon = decoded ? decoded->find(':') : std::string::npos;
    if (colon == std::string::npos)
      throw Error("parse " + path + ": invalid \"auth\" for \"" + key + "\"", EINVAL);
    return Credentials{decoded->substr(0, colon), decoded->substr(colon + 1)};
  }
  auto u = e.find("username");
  auto p = e.find("password");
  if (u != e.end() && u->is_string() && p != e.end() && p->is_string())
    return Credentials{u->get<std::string>(), p->get<std::string>()};
  return std::nullopt;
}

std::optional<Credentials> lookup_in(const json& file, const std::string& path,
                                     const std::string& host) {
  auto auths = file.find("auths");
  if (auths == file.end() || !auths->is_object()) return std::nullopt;
  // Exact spellings first, in the order podman and docker write them.
  std::vector<std::string> exact = {host};
  if (is_docker_hub(host)) exact = {"docker.io", "index.docker.io", "https://index.docker.io/v1/"};
  for (const auto& k : exact) {
    if (auto e = auths->find(k); e != auths->end())
      if (auto c = entry_credentials(*e, path, k)) return c;
  }
  for (const auto& [k, e] : auths->items()) {
    if (key_matches(k, host))
      if (auto c = entry_credentials(e, path, k)) return c;
  }
  return std::nullopt;
}

void write_private_atomic(const std::string& path, const std::string& data) {
  std::string dir = path.substr(0, path.rfind('/'));
  if (!dir.empty()) mkdir_p(dir, 0700);
  std::string tmp = path + ".tmp.XXXXXX";
  UniqueFd fd(::mkostemp(tmp.data(), O_CLOEXEC));
  if (!fd) throw_errno("create " + tmp);
  try {
    if (::fchmod(fd.get(), 0600) != 0) throw_errno("chmod " + tmp);
    if (!write_all(fd.get(), data.data(), data.size())) throw_errno("write " + tmp);
    if (::fsync(fd.get()) != 0) throw_errno("fsync " + tmp);
    if (::rename(tmp.c_str(), path.c_str()) != 0) throw_errno("rename " + tmp + " to " + path);
  } catch (...) {
    ::unlink(tmp.c_str());
    throw;
  }
}

}  // namespace

std::string primary_auth_file(const std::string& authfile) {
  if (!authfile.empty()) return authfile;
  if (auto f = env("REGISTRY_AUTH_FILE"); !f.empty()) return f;
  if (auto d = env("XDG_RUNTIME_DIR"); !d.empty()) return d + "/containers/auth.json";
  return "/run/containers/" + std::to_string(::getuid()) + "/auth.json";
}

std::vector<std::string> auth_file_search_path(const std::string& authfile) {
  return {primary_auth_file(authfile), home_dir() + "/.docker/config.json"};
}

Credentials lookup_credentials(const std::string& host, const std::string& authfile) {
  for (const auto& path : auth_file_search_path(authfile)) {
    auto file = load(path);
    if (!file) continue;
    if (auto c = lookup_in(*file, path, host)) return *c;
  }
  return {};
}

void store_credentials(const std::string& host, const Credentials& creds,
                       const std::string& authfile) {
  if (host.empty()) throw Error("store credentials: empty registry host", EINVAL);
  if (creds.username.find(':') != std::string::npos)
    throw Error("store credentials for " + host + ": username must not contain ':'", EINVAL);
  std::string path = primary_auth_file(authfile);
  json file = load(path).value_or(json::object());
  json& auths = file["auths"];
  if (!auths.is_object()) auths = json::object();
  std::string key = canonical_host(host);
  json& entry = auths[key];
  if (!entry.is_object()) entry = json::object();
  entry["auth"] = base64_encode(creds.username + ":" + creds.password);
  try {
    write_private_atomic(path, file.dump(1, '\t') + "\n");
  } catch (const Error& e) {
    throw e.with_context("store credentials for " + host);
  }
}

bool remove_credentials(const std::string& host, const std::string& authfile) {
  std::string path = primary_auth_file(authfile);
  auto file = load(path);
  if (!file) return false;
  auto auths = file->find("auths");
  if (auths == file->end() || !auths->is_object()) return false;
  std::vector<std::string> doomed;
  for (const auto& [k, e] : auths->items()) {
    if (k == host || key_matches(k, host)) doomed.push_back(k);
  }
  if (doomed.empty()) return false;
  for (const auto& k : doomed) auths->erase(k);
  try {
    write_private_atomic(path, file->dump(1, '\t') + "\n");
  } catch (const Error& e) {
    throw e.with_context("remove credentials for " + host);
  }
  return true;
}

std::string base64_encode(std::string_view data) {
  std::string out;
  out.reserve((data.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 2 < data.size(); i += 3) {
    uint32_t v = (uint8_t(data[i]) << 16) | (uint8_t(data[i + 1]) << 8) | uint8_t(data[i + 2]);
    out += {kB64[v >> 18], kB64[(v >> 12) & 63], kB64[(v >> 6) & 63], kB64[v & 63]};
  }
  if (size_t rest = data.size() - i; rest > 0) {
    uint32_t v = uint8_t(data[i]) << 16;
    if (rest == 2) v |= uint8_t(data[i + 1]) << 8;
    out += kB64[v >> 18];
    out += kB64[(v >> 12) & 63];
    out += rest == 2 ? kB64[(v >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

std::optional<std::string> base64_decode(std::string_view text) {
  while (!text.empty() && text.back() == '=') text.remove_suffix(1);
  if (text.size() % 4 == 1) return std::nullopt;
  std::string out;
  out.reserve(text.size() * 3 / 4);
  uint32_t acc = 0;
  int bits = 0;
  for (char c : text) {
    const char* p = c ? std::strchr(kB64, c) : nullptr;
    if (!p) return std::nullopt;
    acc = (acc << 6) | static_cast<uint32_t>(p - kB64);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>((acc >> bits) & 0xff));
    }
  }
  return out;
}

}  // namespace racker::image
