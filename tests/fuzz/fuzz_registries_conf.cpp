// registries.conf (image/registries.hpp): parse_registries_conf on arbitrary TOML, then what a
// pull does with an accepted file: resolve_name and pull_sources for a few fixed names and
// for names made from the file's own aliases and registry prefixes (so prefix rewriting runs
// on fuzzed locations).
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz.hpp"
#include "image/reference.hpp"
#include "image/registries.hpp"

using namespace racker::image;

namespace {

constexpr const char* kDigest =
    "@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
constexpr size_t kMaxNames = 48;

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  RegistriesConf conf;
  if (!racker::fuzz::accepts("parse_registries_conf",
                             [&] { conf = parse_registries_conf(text, "fuzz.conf"); }))
    return 0;

  std::vector<std::string> names = {"debian", "library/debian:12", "foo/bar" + std::string(kDigest),
                                    "quay.io/x/y:z", "localhost:5000/a/b"};
  for (const auto& [alias, target] : conf.aliases) {
    names.push_back(alias);
    names.push_back(alias + ":tag" + kDigest);
    names.push_back(target);
  }
  for (const RegistryConfig& reg : conf.registries) {
    std::string prefix = reg.prefix.starts_with("*.") ? "sub" + reg.prefix.substr(1) : reg.prefix;
    names.push_back(prefix);
    names.push_back(prefix + "/repo");
    names.push_back(prefix + "/repo:tag" + kDigest);
  }
  for (const std::string& registry : conf.unqualified_search_registries)
    names.push_back(registry + "/x");
  if (names.size() > kMaxNames) names.resize(kMaxNames);

  for (const std::string& name : names) {
    std::vector<Reference> candidates;
    if (!racker::fuzz::accepts("resolve_name", [&] { candidates = resolve_name(conf, name); }))
      continue;
    for (const Reference& ref : candidates)
      racker::fuzz::accepts("pull_sources", [&] { (void)pull_sources(conf, ref); });
  }
  return 0;
}
