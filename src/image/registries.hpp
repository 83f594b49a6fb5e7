// containers-registries.conf(5), version 2 (version 1 files are converted): which registries
// short names are searched in, short-name aliases, and per-registry mirrors, location
// rewriting, insecure and blocked flags. Decides *where* to pull from; never talks to a
// registry itself.
#pragma once

#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "image/reference.hpp"

namespace racker::image {

struct Mirror {
  std::string location;
  bool insecure = false;
  // "pull-from-mirror": "" or "all" (always), "digest-only", "tag-only" (refs without a digest).
  std::string pull_from_mirror;
};

struct RegistryConfig {
  std::string prefix;    // as given, or location when absent; "*.example.com" wildcards
  std::string location;  // "" only for wildcard prefixes: the reference is used unchanged
  bool insecure = false;
  bool blocked = false;
  std::vector<Mirror> mirrors;  // tried in order, before the location
  bool mirror_by_digest_only = false;
};

struct RegistriesConf {
  std::vector<std::string> unqualified_search_registries;
  // Sorted by prefix, one entry per prefix (the first one in a file wins, as in
  // containers/image; a later drop-in replaces an earlier entry with the same prefix).
  std::vector<RegistryConfig> registries;
  // [aliases]: short name ("fedora") -> normalised name ("registry.fedoraproject.org/fedora").
  std::map<std::string, std::string> aliases;
};

// Parses one file's text. Unknown keys are ignored (as containers/image does); wrong types and
// invalid values are errors naming the file, line and key, e.g.
// `/etc/containers/registries.conf:4: registry[0].insecure: expected a boolean, got a string`.
RegistriesConf parse_registries_conf(std::string_view toml_text, const std::string& source_name);

// Loads the configuration: override_path alone when non-empty; else $RACKER_REGISTRIES_CONF
// alone when set; else /etc/containers/registries.conf (if present) followed by the drop-ins
// /etc/containers/registries.conf.d/*.conf in lexical order. A drop-in replaces
// unqualified-search-registries when it sets it, replaces [[registry]] entries with the same
// prefix, and overrides aliases per key (an alias set to "" removes it).
RegistriesConf load_registries_conf(const std::string& override_path = "");
// As above, with the default files looked up below `root` instead of "/" (for tests).
RegistriesConf load_registries_conf(const std::string& override_path, const std::string& root);

struct PullSource {
  std::string endpoint;    // host[:port] to talk to; docker.io is "registry-1.docker.io"
  std::string repository;  // the repository on that endpoint, after prefix rewriting
  bool insecure = false;   // skip TLS verification / allow plain HTTP
  bool is_mirror = false;
};

// Where to pull a fully-qualified reference from, in order: the mirrors of the [[registry]]
// entry with the longest matching prefix (filtered by mirror-by-digest-only/pull-from-mirror),
// then its location (the matched prefix rewritten to it), or the reference's own registry when
// no entry matches. Throws racker::Error `registry "<prefix>" is blocked in registries.conf`.
std::vector<PullSource> pull_sources(const RegistriesConf& conf, const Reference& ref);

// The fully-qualified candidates for a user-supplied name, in the order to try them. A
// qualified input yields just itself. A short name yields its alias when [aliases] has one,
// else one candidate per unqualified-search-registries entry (docker.io adds "library/" to
// single-component names), or docker.io alone when that list is empty (docker's behaviour).
// Tag and digest of the input carry over. Throws racker::Error for an invalid input.
std::vector<Reference> resolve_name(const RegistriesConf& conf, std::string_view input);

}  // namespace racker::image
