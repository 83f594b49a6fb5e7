#include "image/registries.hpp"

#include <unistd.h>

#include <toml++/toml.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <optional>

#include "base/error.hpp"
#include "base/fs.hpp"
#include "base/ids.hpp"

namespace racker::image {

namespace {

constexpr std::string_view kDockerHubEndpoint = "registry-1.docker.io";
constexpr const char* kDefaultConf = "/etc/containers/registries.conf";
constexpr const char* kDefaultDropInDir = "/etc/containers/registries.conf.d";

// One file's configuration plus what a later drop-in needs to know to merge it.
struct ParsedFile {
  RegistriesConf conf;      // aliases may hold "" values: they reset earlier files' aliases
  bool search_set = false;  // unqualified-search-registries was present (even as [])
};

std::string env_dir(const char* name) {
  const char* v = std::getenv(name);
  return v && *v == '/' ? std::string(v) : "";
}

std::string type_name(const toml::node& n) {
  switch (n.type()) {
    case toml::node_type::table:
      return "a table";
    case toml::node_type::array:
      return "an array";
    case toml::node_type::string:
      return "a string";
    case toml::node_type::integer:
      return "an integer";
    case toml::node_type::floating_point:
      return "a float";
    case toml::node_type::boolean:
      return "a boolean";
    case toml::node_type::date:
      return "a date";
    case toml::node_type::time:
      return "a time";
    case toml::node_type::date_time:
      return "a date-time";
    default:
      return "nothing";
  }
}

// Reads typed values out of the document, turning every mistake into an error that names the
// file, the line and the key.
class ConfReader {
 public:
  explicit ConfReader(const std::string& source) : source_(source) {}

  [[noreturn]] void fail(const toml::node* at, const std::string& key,
                         const std::string& problem) const {
    std::string where = source_;
    if (at && at->source().begin.line > 0) where += ":" + std::to_string(at->source().begin.line);
    throw Error(where + ": " + (key.empty() ? "" : key + ": ") + problem, EINVAL);
  }

  std::optional<std::string> string(const toml::table& t, std::string_view name,
                                    const std::string& key) const {
    const toml::node* n = t.get(name);
    if (!n) return std::nullopt;
    if (!n->is_string()) fail(n, key, "expected a string, got " + type_name(*n));
    return *n->value<std::string>();
  }

  std::optional<bool> boolean(const toml::table& t, std::string_view name,
                              const std::string& key) const {
    const toml::node* n = t.get(name);
    if (!n) return std::nullopt;
    if (!n->is_boolean()) fail(n, key, "expected a boolean, got " + type_name(*n));
    return *n->value<bool>();
  }

  std::optional<std::vector<std::string>> strings(const toml::table& t, std::string_view name,
                                                  const std::string& key) const {
    const toml::node* n = t.get(name);
    if (!n) return std::nullopt;
    const toml::array* arr = n->as_array();
    if (!arr) fail(n, key, "expected an array of strings, got " + type_name(*n));
    std::vector<std::string> out;
    for (size_t i = 0; i < arr->size(); ++i) {
      const toml::node& el = *arr->get(i);
      if (!el.is_string())
        fail(&el, key + "[" + std::to_string(i) + "]", "expected a string, got " + type_name(el));
      out.push_back(*el.value<std::string>());
    }
    return out;
  }

  // An array of tables ([[name]]); nullptr when absent.
  const toml::array* tables(const toml::table& t, std::string_view name,
                            const std::string& key) const {
    const toml::node* n = t.get(name);
    if (!n) return nullptr;
    const toml::array* arr = n->as_array();
    if (!arr || !arr->is_array_of_tables())
      fail(n, key, "expected an array of tables ([[" + key + "]]), got " + type_name(*n));
    return arr;
  }

  const toml::table* table(const toml::table& t, std::string_view name,
                           const std::string& key) const {
    const toml::node* n = t.get(name);
    if (!n) return nullptr;
    if (!n->is_table()) fail(n, key, "expected a table, got " + type_name(*n));
    return n->as_table();
  }

 private:
  const std::string& source_;
};

// containers/image's parseLocation: trailing slashes go, URL schemes are refused.
std::string clean_location(const ConfReader& r, const toml::node* at, const std::string& key,
                           std::string_view value) {
  while (value.ends_with('/')) value.remove_suffix(1);
  if (value.starts_with("http://") || value.starts_with("https://"))
    r.fail(at, key,
           "invalid location \"" + std::string(value) + "\": URI schemes are not supported");
  return std::string(value);
}

bool has_tag_or_digest(std::string_view s) {
  if (s.find('@') != std::string_view::npos) return true;
  size_t slash = s.rfind('/');
  return s.find(':', slash == std::string_view::npos ? 0 : slash + 1) != std::string_view::npos;
}

RegistryConfig parse_registry(const ConfReader& r, const toml::table& t, const std::string& key) {
  RegistryConfig reg;
  std::optional<std::string> location = r.string(t, "location", key + ".location");
  std::optional<std::string> prefix = r.string(t, "prefix", key + ".prefix");
  reg.insecure = r.boolean(t, "insecure", key + ".insecure").value_or(false);
  reg.blocked = r.boolean(t, "blocked", key + ".blocked").value_or(false);
  reg.mirror_by_digest_only =
      r.boolean(t, "mirror-by-digest-only", key + ".mirror-by-digest-only").value_or(false);
  if (t.get("pull-from-mirror"))
    r.fail(t.get("pull-from-mirror"), key + ".pull-from-mirror",
           "only allowed in a [[registry.mirror]] table");

  if (location) reg.location = clean_location(r, t.get("location"), key + ".location", *location);
  if (prefix) reg.prefix = clean_location(r, t.get("prefix"), key + ".prefix", *prefix);
  if (reg.prefix.empty()) {
    if (reg.location.empty()) r.fail(&t, key, "neither location nor prefix is set");
    reg.prefix = reg.location;
  } else if (reg.prefix.starts_with("*.")) {
    if (reg.prefix.find_first_of("/@:") != std::string::npos)
      r.fail(t.get("prefix"), key + ".prefix",
             "wildcard prefix \"" + reg.prefix + "\" must have the form *.example.com");
  } else if (reg.location.empty()) {
    r.fail(&t, key, "location is unset and prefix \"" + reg.prefix + "\" is not a wildcard");
  }

  if (const toml::array* mirrors = r.tables(t, "mirror", key + ".mirror")) {
    for (size_t i = 0; i < mirrors->size(); ++i) {
      const toml::table& mt = *mirrors->get(i)->as_table();
      std::string mkey = key + ".mirror[" + std::to_string(i) + "]";
      Mirror m;
      std::optional<std::string> mloc = r.string(mt, "location", mkey + ".location");
      if (mloc) m.location = clean_location(r, mt.get("location"), mkey + ".location", *mloc);
      m.insecure = r.boolean(mt, "insecure", mkey + ".insecure").value_or(false);
      m.pull_from_mirror =
          r.string(mt, "pull-from-mirror", mkey + ".pull-from-mirror").value_or("");
      if (m.location.empty()) r.fail(&mt, mkey, "mirror location is unset");
      const std::string& pfm = m.pull_from_mirror;
      if (!pfm.empty() && pfm != "all" && pfm != "digest-only" && pfm != "tag-only")
        r.fail(mt.get("pull-from-mirror"), mkey + ".pull-from-mirror",
               "unsupported value \"" + pfm + "\" (want all, digest-only or tag-only)");
      if (!pfm.empty() && reg.mirror_by_digest_only)
        r.fail(mt.get("pull-from-mirror"), mkey + ".pull-from-mirror",
               "cannot be combined with mirror-by-digest-only of registry \"" + reg.prefix + "\"");
      reg.mirrors.push_back(std::move(m));
    }
  }
  return reg;
}

void check_alias(const ConfReader& r, const toml::node* at, const std::string& key,
                 const std::string& name, const std::string& value, std::string& normalised) {
  Reference short_ref;
  try {
    short_ref = parse_reference(name);
  } catch (const Error& e) {
    r.fail(at, key, e.what());
  }
  if (short_ref.registry_given || name.starts_with("docker://"))
    r.fail(at, key, "alias name \"" + name + "\" must be a short name, without a registry");
  if (has_tag_or_digest(name))
    r.fail(at, key, "alias name \"" + name + "\" must not have a tag or digest");
  if (value.empty()) return;  // resets an alias from an earlier file
  Reference target;
  try {
    target = parse_reference(value);
  } catch (const Error& e) {
    r.fail(at, key, e.what());
  }
  if (!target.registry_given || value.starts_with("docker://"))
    r.fail(at, key, "alias \"" + value + "\" must name a registry and repository");
  if (has_tag_or_digest(value))
    r.fail(at, key, "alias \"" + value + "\" must not have a tag or digest");
  normalised = target.name();
}

// Registries with the same location (or wildcard prefix) must agree on insecure/blocked;
// later entries with an already-seen prefix are dropped (the first longest prefix always
// wins in containers/image); the result is sorted by prefix.
void post_process(const ConfReader& r, RegistriesConf& conf) {
  std::map<std::string, const RegistryConfig*> by_location;
  for (const RegistryConfig& reg : conf.registries) {
    const std::string& loc = reg.location.empty() ? reg.prefix : reg.location;
    auto [it, fresh] = by_location.emplace(loc, &reg);
    if (fresh) continue;
    if (it->second->insecure != reg.insecure)
      r.fail(nullptr, "",
             "registry \"" + loc +
                 "\" is defined multiple times with conflicting "
                 "insecure settings");
    if (it->second->blocked != reg.blocked)
      r.fail(nullptr, "",
             "registry \"" + loc +
                 "\" is defined multiple times with conflicting "
                 "blocked settings");
  }
  std::vector<RegistryConfig> unique;
  for (RegistryConfig& reg : conf.registries) {
    bool seen = std::any_of(unique.begin(), unique.end(),
                            [&](const RegistryConfig& u) { return u.prefix == reg.prefix; });
    if (!seen) unique.push_back(std::move(reg));
  }
  std::stable_sort(
      unique.begin(), unique.end(),
      [](const RegistryConfig& a, const RegistryConfig& b) { return a.prefix < b.prefix; });
  conf.registries = std::move(unique);
}

// [registries.search], [registries.insecure], [registries.block] of the version 1 format.
void convert_v1(const ConfReader& r, const toml::table& v1, ParsedFile& out) {
  auto list = [&](std::string_view name) -> std::vector<std::string> {
    std::string key = "registries." + std::string(name);
    const toml::table* t = r.table(v1, name, key);
    if (!t) return {};
    return r.strings(*t, "registries", key + ".registries").value_or(std::vector<std::string>{});
  };
  auto entry = [&](const std::string& location) -> RegistryConfig& {
    for (RegistryConfig& reg : out.conf.registries)
      if (reg.location == location) return reg;
    RegistryConfig& reg = out.conf.registries.emplace_back();
    reg.prefix = reg.location = location;
    return reg;
  };
  if (const toml::table* search = r.table(v1, "search", "registries.search");
      search && search->get("registries")) {
    out.conf.unqualified_search_registries = list("search");
    out.search_set = true;
  }
  for (const std::string& loc : list("block"))
    entry(clean_location(r, &v1, "registries.block", loc)).blocked = true;
  for (const std::string& loc : list("insecure"))
    entry(clean_location(r, &v1, "registries.insecure", loc)).insecure = true;
}

ParsedFile parse_file(std::string_view text, const std::string& source, bool v1_allowed) {
  ConfReader r(source);
  toml::table root;
#if TOML_EXCEPTIONS
  try {
    root = toml::parse(text, source);
  } catch (const toml::parse_error& e) {
    throw Error(source + ":" + std::to_string(e.source().begin.line) + ":" +
                    std::to_string(e.source().begin.column) +
                    ": invalid TOML: " + std::string(e.description()),
                EINVAL);
  }
#else
  toml::parse_result parsed = toml::parse(text, source);
  if (!parsed) {
    const toml::parse_error& e = parsed.error();
    throw Error(source + ":" + std::to_string(e.source().begin.line) + ":" +
                    std::to_string(e.source().begin.column) +
                    ": invalid TOML: " + std::string(e.description()),
                EINVAL);
  }
  root = std::move(parsed).table();
#endif

  ParsedFile out;
  RegistriesConf& conf = out.conf;
  static constexpr std::string_view kV2Keys[] = {
      "registry", "unqualified-search-registries",     "credential-helpers", "short-name-mode",
      "aliases",  "additional-layer-store-auth-helper"};
  bool has_v2 = std::any_of(std::begin(kV2Keys), std::end(kV2Keys),
                            [&](std::string_view k) { return root.contains(k); });
  if (const toml::table* v1 = r.table(root, "registries", "registries"); v1 && !v1->empty()) {
    if (!v1_allowed) r.fail(v1, "registries", "drop-in files must use the version 2 format");
    if (has_v2) r.fail(v1, "registries", "mixing the version 1 and 2 formats is not supported");
    convert_v1(r, *v1, out);
    post_process(r, conf);
    return out;
  }

  if (auto search =
          r.strings(root, "unqualified-search-registries", "unqualified-search-registries")) {
    out.search_set = true;
    for (size_t i = 0; i < search->size(); ++i) {
      std::string key = "unqualified-search-registries[" + std::to_string(i) + "]";
      const toml::node* at = root.get("unqualified-search-registries");
      std::string host = clean_location(r, at, key, (*search)[i]);
      if (!is_valid_registry_host(host))
        r.fail(at, key, "invalid registry \"" + host + "\" (want host[:port])");
      conf.unqualified_search_registries.push_back(std::move(host));
    }
  }
  // Known keys of other consumers: only their types are checked.
  r.strings(root, "credential-helpers", "credential-helpers");
  if (auto mode = r.string(root, "short-name-mode", "short-name-mode");
      mode && *mode != "enforcing" && *mode != "permissive" && *mode != "disabled")
    r.fail(root.get("short-name-mode"), "short-name-mode", "invalid value \"" + *mode + "\"");

  if (const toml::array* regs = r.tables(root, "registry", "registry")) {
    for (size_t i = 0; i < regs->size(); ++i)
      conf.registries.push_back(
          parse_registry(r, *regs->get(i)->as_table(), "registry[" + std::to_string(i) + "]"));
  }

  if (const toml::table* aliases = r.table(root, "aliases", "aliases")) {
    for (auto&& [k, v] : *aliases) {
      std::string name(k.str());
      std::string key = "aliases.\"" + name + "\"";
      if (!v.is_string()) r.fail(&v, key, "expected a string, got " + type_name(v));
      std::string value = *v.value<std::string>();
      std::string normalised;
      check_alias(r, &v, key, name, value, normalised);
      conf.aliases[name] = normalised;
    }
  }

  post_process(r, conf);
  return out;
}

void drop_reset_aliases(RegistriesConf& conf) {
  std::erase_if(conf.aliases, [](const auto& kv) { return kv.second.empty(); });
}

// A later file's settings win: see load_registries_conf in the header.
void merge(RegistriesConf& base, ParsedFile&& update) {
  if (update.search_set)
    base.unqualified_search_registries = std::move(update.conf.unqualified_search_registries);
  for (RegistryConfig& reg : update.conf.registries) {
    auto it = std::find_if(base.registries.begin(), base.registries.end(),
                           [&](const RegistryConfig& b) { return b.prefix == reg.prefix; });
    if (it != base.registries.end())
      *it = std::move(reg);
    else
      base.registries.push_back(std::move(reg));
  }
  std::stable_sort(
      base.registries.begin(), base.registries.end(),
      [](const RegistryConfig& a, const RegistryConfig& b) { return a.prefix < b.prefix; });
  for (auto& [name, value] : update.conf.aliases) base.aliases[name] = std::move(value);
}

RegistriesConf load_one(const std::string& path) {
  ParsedFile f = parse_file(read_file(path), path, true);
  drop_reset_aliases(f.conf);
  return std::move(f.conf);
}

std::vector<std::string> drop_in_files(const std::string& dir) {
  namespace fs = std::filesystem;
  std::vector<std::string> out;
  std::error_code ec;
  fs::directory_iterator it(dir, ec);
  if (ec) {
    if (ec == std::errc::no_such_file_or_directory || ec == std::errc::not_a_directory) return out;
    throw Error("read directory " + dir + ": " + ec.message(), ec.value());
  }
  for (const fs::directory_entry& e : it) {
    std::string name = e.path().filename().string();
    if (name.size() > 5 && name.ends_with(".conf") && !e.is_directory(ec))
      out.push_back(e.path().string());
  }
  std::sort(out.begin(), out.end());
  return out;
}

// The length of ref matched by prefix (containers/image's refMatchingPrefix), or -1.
// ref is a canonical "host[:port]/repo[:tag][@digest]".
long match_prefix(std::string_view ref, std::string_view prefix) {
  if (prefix.starts_with("*.")) {
    // Subdomain wildcard: matches hosts ending in ".example.com", whatever follows the host.
    std::string_view host = ref.substr(0, ref.find_first_of(":/@"));
    std::string_view suffix = prefix.substr(1);
    if (host.size() <= suffix.size() || !host.ends_with(suffix)) return -1;
    return static_cast<long>(host.size());
  }
  if (!ref.starts_with(prefix)) return -1;
  if (ref.size() == prefix.size()) return static_cast<long>(prefix.size());
  char next = ref[prefix.size()];
  // Unlike containers/image, a host-only prefix does not match the same host with a port
  // ("example.com" vs "example.com:5000/x"): a ':' only continues a prefix into a tag.
  bool continues =
      next == '/' || next == '@' || (next == ':' && prefix.find('/') != std::string_view::npos);
  return continues ? static_cast<long>(prefix.size()) : -1;
}

PullSource source_for(const Reference& ref, bool insecure, bool is_mirror) {
  return PullSource{
      .endpoint = ref.registry == kDockerHub ? std::string(kDockerHubEndpoint) : ref.registry,
      .repository = ref.repository,
      .insecure = insecure,
      .is_mirror = is_mirror};
}

Reference rewrite(const Reference& ref, std::string_view prefix, long matched,
                  const std::string& location) {
  if (location.empty()) return ref;  // wildcard prefix without a location
  std::string refstr = ref.str();
  std::string rewritten = location + refstr.substr(static_cast<size_t>(matched));
  Reference out;
  try {
    out = parse_reference(rewritten);
  } catch (const Error& e) {
    throw e.with_context("registries.conf: rewrite " + refstr + " by prefix \"" +
                         std::string(prefix) + "\" to location \"" + location + "\"");
  }
  if (!out.registry_given)
    throw Error(
        "registries.conf: location \"" + location + "\" does not start with a registry host",
        EINVAL);
  return out;
}

}  // namespace

RegistriesConf parse_registries_conf(std::string_view toml_text, const std::string& source_name) {
  ParsedFile f = parse_file(toml_text, source_name, true);
  drop_reset_aliases(f.conf);
  return std::move(f.conf);
}

RegistriesConf load_registries_conf(const std::string& override_path) {
  return load_registries_conf(override_path, "/");
}

RegistriesConf load_registries_conf(const std::string& override_path, const std::string& root) {
  if (!override_path.empty()) return load_one(override_path);
  if (const char* env = std::getenv("RACKER_REGISTRIES_CONF"); env && *env) return load_one(env);

  RegistriesConf conf;
  std::string main_file = join_under(root, kDefaultConf);
  // an ordinary user's own file replaces the system's, as in containers-registries.conf(5)
  // (also inside a rootless racker's namespace, where the user is root)
  if (root == "/" && !host_root()) {
    std::string config = env_dir("XDG_CONFIG_HOME");
    if (config.empty() && !env_dir("HOME").empty()) config = env_dir("HOME") + "/.config";
    if (!config.empty() && ::access((config + "/containers/registries.conf").c_str(), F_OK) == 0)
      main_file = config + "/containers/registries.conf";
  }
  if (std::optional<std::string> text = read_file_if_exists(main_file))
    conf = parse_file(*text, main_file, true).conf;
  for (const std::string& path : drop_in_files(join_under(root, kDefaultDropInDir))) {
    std::optional<std::string> text = read_file_if_exists(path);
    if (!text) continue;  // removed since the directory was listed
    merge(conf, parse_file(*text, path, false));
  }
  drop_reset_aliases(conf);
  return conf;
}

std::vector<PullSource> pull_sources(const RegistriesConf& conf, const Reference& ref) {
  std::string refstr = ref.str();
  const RegistryConfig* best = nullptr;
  long best_matched = -1;
  for (const RegistryConfig& reg : conf.registries) {
    long matched = match_prefix(refstr, reg.prefix);
    if (matched >= 0 && (!best || reg.prefix.size() > best->prefix.size())) {
      best = &reg;
      best_matched = matched;
    }
  }
  if (!best) return {source_for(ref, false, false)};
  if (best->blocked)
    throw Error("registry \"" + best->prefix + "\" is blocked in registries.conf", EACCES);

  std::vector<PullSource> out;
  bool digested = !ref.digest.empty();
  for (const Mirror& m : best->mirrors) {
    bool use = best->mirror_by_digest_only           ? digested
               : m.pull_from_mirror == "digest-only" ? digested
               : m.pull_from_mirror == "tag-only"    ? !digested
                                                     : true;
    if (!use) continue;
    out.push_back(
        source_for(rewrite(ref, best->prefix, best_matched, m.location), m.insecure, true));
  }
  out.push_back(
      source_for(rewrite(ref, best->prefix, best_matched, best->location), best->insecure, false));
  return out;
}

std::vector<Reference> resolve_name(const RegistriesConf& conf, std::string_view input) {
  Reference parsed = parse_reference(input);
  if (parsed.registry_given) return {parsed};

  // The name as typed ("debian", "library/debian"): aliases are keyed by it, and search
  // registries other than docker.io get it without "library/".
  std::string_view s = input;
  if (s.starts_with("docker://")) s.remove_prefix(9);
  std::string_view name = s.substr(0, s.find('@'));
  name = name.substr(0, name.find(':'));  // no registry, so any ':' starts the tag
  std::string_view tag_and_digest = s.substr(name.size());

  if (auto it = conf.aliases.find(std::string(name));
      it != conf.aliases.end() && !it->second.empty()) {
    try {
      return {parse_reference(it->second + std::string(tag_and_digest))};
    } catch (const Error& e) {
      throw e.with_context("alias \"" + it->first + "\" = \"" + it->second + "\"");
    }
  }

  std::vector<std::string> search = conf.unqualified_search_registries;
  if (search.empty()) search.emplace_back(kDockerHub);
  std::vector<Reference> out;
  for (const std::string& registry : search) {
    Reference ref = parsed;
    ref.registry = registry == "index.docker.io" ? std::string(kDockerHub) : registry;
    ref.registry_given = true;
    ref.repository = name;
    if (ref.registry == kDockerHub && name.find('/') == std::string_view::npos)
      ref.repository = "library/" + ref.repository;
    if (ref.name().size() > 255)
      throw Error("invalid reference \"" + ref.str() +
                      "\": repository name must not be more than 255 characters",
                  EINVAL);
    out.push_back(std::move(ref));
  }
  return out;
}

}  // namespace racker::image
