#include "probe/catalog.hpp"

#include <cerrno>
#include <cstdlib>
#include <set>

#include <nlohmann/json.hpp>

#include "base/error.hpp"
#include "base/fs.hpp"
#include "engine/package_managers.hpp"

namespace racker::probe {

extern const char* const kBuiltinCatalog;  // catalog_data.cpp, generated from the data file

namespace {

const std::set<std::string> kFamilies = {"debian", "ubuntu", "fedora", "rhel", "suse", "arch"};

bool valid_label(const std::string& s) {
  if (s.empty() || s.size() > 64) return false;
  for (char c : s)
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_'))
      return false;
  return s.front() != '-' && s.front() != '.';
}

std::string field_string(const nlohmann::json& obj, const char* key, const std::string& where) {
  auto it = obj.find(key);
  if (it == obj.end()) throw Error(where + ": missing \"" + key + "\"", EINVAL);
  if (!it->is_string() || it->get<std::string>().empty())
    throw Error(where + ": \"" + key + "\" must be a non-empty string", EINVAL);
  return it->get<std::string>();
}

CatalogEntry parse_entry(const nlohmann::json& j, const std::string& where) {
  if (!j.is_object()) throw Error(where + ": must be an object", EINVAL);
  CatalogEntry e;
  e.label = field_string(j, "label", where);
  if (!valid_label(e.label))
    throw Error(where + ": invalid label \"" + e.label + "\" (use a-z, 0-9, '-', '.', '_')",
                EINVAL);
  std::string at = where + " (" + e.label + ")";
  auto src = j.find("source");
  if (src == j.end()) throw Error(at + ": missing \"source\"", EINVAL);
  if (!src->is_object() || src->size() != 1)
    throw Error(at + ": \"source\" must be {\"bake\": {...}}, {\"image\": \"REF\"} or "
                     "{\"tarball\": {...}}",
                EINVAL);
  if (auto b = src->find("bake"); b != src->end()) {
    if (!b->is_object()) throw Error(at + ": source.bake must be an object", EINVAL);
    e.bake_distro = field_string(*b, "distro", at + ": source.bake");
    if (b->contains("suite")) e.bake_suite = field_string(*b, "suite", at + ": source.bake");
    if (b->contains("mirror")) e.bake_mirror = field_string(*b, "mirror", at + ": source.bake");
    if (e.bake_distro != "debian" && e.bake_distro != "ubuntu")
      throw Error(
          at + ": source.bake: distro \"" + e.bake_distro + "\" cannot be baked (debian or ubuntu)",
          EINVAL);
  } else if (auto i = src->find("image"); i != src->end()) {
    if (!i->is_string() || i->get<std::string>().empty())
      throw Error(at + ": source.image must be a registry reference", EINVAL);
    e.image_ref = i->get<std::string>();
  } else if (auto t = src->find("tarball"); t != src->end()) {
    if (!t->is_object()) throw Error(at + ": source.tarball must be an object", EINVAL);
    e.tarball_url = field_string(*t, "url", at + ": source.tarball");
    if (t->contains("sha256sums"))
      e.tarball_sums = field_string(*t, "sha256sums", at + ": source.tarball");
    for (auto* u : {&e.tarball_url, &e.tarball_sums})
      if (!u->empty() && !u->starts_with("http://") && !u->starts_with("https://"))
        throw Error(at + ": source.tarball: \"" + *u + "\" is not an http(s) URL", EINVAL);
    if (e.tarball_sums.empty()) {
      std::string dir = e.tarball_url.substr(0, e.tarball_url.find_last_of('/'));
      if (dir.find("://") + 3 > dir.size() ||
          dir.find('/', dir.find("://") + 3) == std::string::npos)
        throw Error(at + ": source.tarball: url has no file name", EINVAL);
      e.tarball_sums = dir + "/SHA256SUMS";
    }
  } else {
    throw Error(at + ": unknown source \"" + src->begin().key() + "\" (bake, image or tarball)",
                EINVAL);
  }
  if (auto a = j.find("aliases"); a != j.end()) {
    if (!a->is_array()) throw Error(at + ": \"aliases\" must be an array of labels", EINVAL);
    for (auto& x : *a) {
      if (!x.is_string() || !valid_label(x.get<std::string>()))
        throw Error(at + ": aliases: " + x.dump() + " is not a valid label", EINVAL);
      e.aliases.push_back(x.get<std::string>());
    }
  }
  e.family = field_string(j, "family", at);
  if (!kFamilies.count(e.family))
    throw Error(
        at + ": unknown family \"" + e.family + "\" (debian, ubuntu, fedora, rhel, suse, arch)",
        EINVAL);
  e.package_manager = field_string(j, "package_manager", at);
  try {
    engine::package_manager(e.package_manager);  // data/provision/package_managers.json
  } catch (const Error&) {
    throw Error(at + ": unknown package_manager \"" + e.package_manager + "\" (" +
                    engine::package_manager_names() + ")",
                EINVAL);
  }
  return e;
}

}  // namespace

std::string CatalogEntry::source_text() const {
  if (baked()) return "bake " + bake_distro + (bake_suite.empty() ? "" : " " + bake_suite);
  if (from_tarball()) return tarball_url;
  return image_ref;
}

Catalog Catalog::parse(std::string_view json_text, const std::string& origin) {
  nlohmann::json doc;
  try {
    doc = nlohmann::json::parse(json_text);
  } catch (const nlohmann::json::exception& e) {
    throw Error(origin + ": invalid JSON: " + e.what(), EINVAL);
  }
  if (!doc.is_object() || !doc.contains("images") || !doc["images"].is_array())
    throw Error(origin + ": expected an object with an \"images\" array", EINVAL);
  Catalog c;
  c.origin_ = origin;
  std::set<std::string> seen;
  size_t n = 0;
  for (auto& j : doc["images"]) {
    auto e = parse_entry(j, origin + ": images[" + std::to_string(n++) + "]");
    if (!seen.insert(e.label).second)
      throw Error(origin + ": duplicate label \"" + e.label + "\"", EINVAL);
    for (auto& a : e.aliases)
      if (!seen.insert(a).second)
        throw Error(origin + ": alias \"" + a + "\" of " + e.label + " is taken", EINVAL);
    c.entries_.push_back(std::move(e));
  }
  if (c.entries_.empty()) throw Error(origin + ": no images", EINVAL);
  return c;
}

std::string_view Catalog::builtin_text() {
  return kBuiltinCatalog;
}

Catalog Catalog::load(const std::string& path) {
  std::string p = path;
  if (p.empty())
    if (const char* env = std::getenv("POSTROJ_CATALOG"); env && *env) p = env;
  if (p.empty()) return parse(builtin_text(), "built-in catalog");
  return parse(read_file(p), p);
}

const CatalogEntry* Catalog::find(std::string_view label) const {
  for (auto& e : entries_)
    if (e.label == label) return &e;
  for (auto& e : entries_)
    for (auto& a : e.aliases)
      if (a == label) return &e;
  return nullptr;
}

const CatalogEntry& Catalog::at(std::string_view label) const {
  if (auto* e = find(label)) return *e;
  std::string known;
  for (auto& e : entries_) known += (known.empty() ? "" : ", ") + e.label;
  throw Error("unknown image label \"" + std::string(label) + "\" (known: " + known + ")", ENOENT);
}

std::string image_name_for(std::string_view label, std::string_view arch) {
  return "postroj.local/" + std::string(label) + ":" + std::string(arch.empty() ? "latest" : arch);
}

std::string base_image_name_for(std::string_view label, std::string_view arch) {
  return "postroj.local/base/" + std::string(label) + ":" +
         std::string(arch.empty() ? "latest" : arch);
}

std::string with_arch(const std::string& url, const std::string& debian_arch) {
  std::string out = url;
  for (size_t at; (at = out.find("{arch}")) != std::string::npos;) out.replace(at, 6, debian_arch);
  return out;
}

}  // namespace racker::probe
