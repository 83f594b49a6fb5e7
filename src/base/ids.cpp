#include "base/ids.hpp"

#include <unistd.h>

#include <cstdlib>
#include <vector>

#include "base/error.hpp"
#include "base/fs.hpp"
#include "base/strings.hpp"

namespace racker {

std::optional<uint32_t> host_uid_of_root() {
  auto map = read_file_if_exists("/proc/self/uid_map");
  if (!map) return std::nullopt;
  for (auto& line : split(*map, '\n')) {
    std::vector<std::string> f;
    for (auto& w : split(trim(line), ' '))
      if (!w.empty()) f.push_back(w);
    if (f.size() == 3 && f[0] == "0")
      if (auto u = parse_uint(f[1]); u && *u <= 0xffffffffu) return static_cast<uint32_t>(*u);
  }
  return std::nullopt;
}

bool host_root() {
  if (::geteuid() != 0) return false;
  // computed the first time euid is 0: an ordinary user becomes 0 only by entering a namespace
  static const bool in_host_ns = [] {
    try {
      return host_uid_of_root() == 0u;
    } catch (const Error&) {
      return false;
    }
  }();
  return in_host_ns;
}

std::string user_name(uid_t uid) {
  if (uid == 0) return "root";
  std::optional<std::string> text;
  try {
    text = read_file_if_exists("/etc/passwd");
  } catch (const Error&) {
  }
  for (auto& line : split(text.value_or(""), '\n')) {
    auto f = split(line, ':');
    if (f.size() > 2 && parse_uint(f[2]) == uid) return f[0];
  }
  return std::to_string(uid);
}

std::string find_in_path(const std::string& name) {
  const char* env = std::getenv("PATH");
  for (auto& dir : split(env && *env ? env : "/usr/bin:/bin", ':')) {
    std::string candidate = (dir.empty() ? "." : dir) + "/" + name;
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return "";
}

}  // namespace racker
