#include "image/manifest.hpp"

#include <sys/utsname.h>

#include <cerrno>
#include <utility>

#include "base/error.hpp"
#include "base/strings.hpp"
#include "image/digest.hpp"

namespace racker::image {

using nlohmann::json;

std::string Platform::str() const {
  return os + "/" + architecture + (variant.empty() ? "" : "/" + variant);
}

bool is_index_media_type(const std::string& mt) {
  return mt == media::oci_index || mt == media::docker_list;
}

namespace {

// Docker's deprecated schema1 (`"schemaVersion": 1`), whatever else the field holds: a string or
// a number like 1e300 (which json's value<int>() would convert with undefined behaviour).
bool is_schema1(const json& j) {
  auto it = j.find("schemaVersion");
  return it != j.end() && it->is_number() && it->get<double>() == 1;
}

}  // namespace

std::string sniff_media_type(const std::string& body, const std::string& content_type) {
  std::string ct = content_type.substr(0, content_type.find(';'));
  if (ct == media::oci_index || ct == media::oci_manifest || ct == media::docker_list ||
      ct == media::docker_manifest)
    return ct;
  try {
    auto j = json::parse(body);
    if (j.contains("mediaType") && j["mediaType"].is_string()) return j["mediaType"];
    if (is_schema1(j)) return "application/vnd.docker.distribution.manifest.v1+json";
    if (j.contains("manifests")) return media::oci_index;
    if (j.contains("layers")) return media::oci_manifest;
  } catch (const json::exception&) {
  }
  return ct;
}

namespace {

[[noreturn]] void bad(const std::string& what, const std::string& why) {
  throw Error(what + ": " + why, EINVAL);
}

// A string field that may be left out (or null); a value of another type is an error, not the
// json::type_error that j.value() would throw.
std::string optional_string(const json& j, const char* key, const char* fallback,
                            const std::string& what) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  if (!it->is_string()) bad(what, std::string(key) + " is not a string");
  return it->get<std::string>();
}

Descriptor parse_descriptor(const json& j, const std::string& what) {
  if (!j.is_object()) bad(what, "descriptor is not an object");
  Descriptor d;
  try {
    d.media_type = optional_string(j, "mediaType", "", what);
    d.digest = j.at("digest").get<std::string>();
    // An integer (int64): get<int64_t>() of 1e300 would be undefined behaviour.
    const json& size = j.at("size");
    if (!size.is_number_integer() ||
        (size.is_number_unsigned() && size.get<uint64_t>() > uint64_t{INT64_MAX}))
      bad(what, "descriptor size is not a 64-bit integer");
    d.size = size.get<int64_t>();
    if (j.contains("urls")) d.urls = j["urls"].get<std::vector<std::string>>();
    if (j.contains("platform")) {
      Platform p;
      p.os = j["platform"].value("os", "");
      p.architecture = j["platform"].value("architecture", "");
      p.variant = j["platform"].value("variant", "");
      d.platform = p;
    }
  } catch (const json::exception& e) {
    bad(what, "malformed descriptor: " + json_error_text(e.what()));
  }
  validate_digest(d.digest);
  if (d.size < 0) bad(what, "negative size in descriptor " + d.digest);
  return d;
}

// Real manifests and configs nest a few levels. Copying, comparing or dumping a json recurses
// once per level: an image config of 10000 nested arrays overflowed the stack (stored whole in
// ImageConfig::raw).
constexpr int kMaxJsonDepth = 100;

json parse_json(const std::string& body, const std::string& what) {
  try {
    return json::parse(body, [&](int depth, json::parse_event_t, json&) {
      if (depth > kMaxJsonDepth)
        bad(what, "JSON nested deeper than " + std::to_string(kMaxJsonDepth) + " levels");
      return true;
    });
  } catch (const json::exception&) {
    bad(what, "not valid JSON");
  }
}

}  // namespace

Manifest parse_manifest(const std::string& body, const std::string& what) {
  json j = parse_json(body, what);
  if (!j.is_object()) bad(what, "not a JSON object");
  if (is_schema1(j)) bad(what, "schema1 manifests are not supported (deprecated Docker format)");
  Manifest m;
  m.media_type = optional_string(j, "mediaType", media::oci_manifest, what);
  if (!j.contains("config") || !j.contains("layers") || !j["layers"].is_array())
    bad(what, "not an image manifest (no config or layers)");
  m.config = parse_descriptor(j["config"], what + ": config");
  for (size_t i = 0; i < j["layers"].size(); ++i) {
    auto d = parse_descriptor(j["layers"][i], what + ": layers[" + std::to_string(i) + "]");
    layer_compression(d.media_type);  // refuses foreign layers early
    m.layers.push_back(d);
  }
  return m;
}

Index parse_index(const std::string& body, const std::string& what) {
  json j = parse_json(body, what);
  if (!j.is_object() || !j.contains("manifests") || !j["manifests"].is_array())
    bad(what, "not an image index (no manifests)");
  Index idx;
  idx.media_type = optional_string(j, "mediaType", media::oci_index, what);
  for (size_t i = 0; i < j["manifests"].size(); ++i)
    idx.manifests.push_back(
        parse_descriptor(j["manifests"][i], what + ": manifests[" + std::to_string(i) + "]"));
  return idx;
}

Platform host_platform() {
  struct utsname u;
  ::uname(&u);
  std::string m = u.machine;
  Platform p;
  if (m == "x86_64")
    p.architecture = "amd64";
  else if (m == "aarch64") {
    p.architecture = "arm64";
    p.variant = "v8";
  } else if (m == "i686" || m == "i386")
    p.architecture = "386";
  else if (m.starts_with("armv7")) {
    p.architecture = "arm";
    p.variant = "v7";
  } else
    p.architecture = m;
  return p;
}

const std::vector<DebianArch>& debian_archs() {
  static const std::vector<DebianArch> a = {
      {"amd64", "amd64", ""},     {"i386", "386", ""},    {"arm64", "arm64", "v8"},
      {"armhf", "arm", "v7"},     {"armel", "arm", "v5"}, {"ppc64el", "ppc64le", ""},
      {"riscv64", "riscv64", ""}, {"s390x", "s390x", ""}, {"mips64el", "mips64le", ""}};
  return a;
}

Platform platform_of_debian_arch(const std::string& debian_arch) {
  std::string names;
  for (auto& a : debian_archs()) {
    if (debian_arch == a.debian) return Platform{"linux", a.oci, a.variant};
    names += (names.empty() ? "" : ", ") + std::string(a.debian);
  }
  throw Error("unknown architecture \"" + debian_arch + "\" (Debian's names: " + names + ")",
              EINVAL);
}

std::string debian_arch_of(const Platform& p) {
  for (auto& a : debian_archs())
    if (p.architecture == a.oci && (p.architecture != "arm" || p.variant == a.variant ||
                                    (p.variant.empty() && std::string(a.variant) == "v7")))
      return a.debian;
  return "";
}

Platform parse_platform(const std::string& s) {
  auto parts = split(s, '/');
  Platform p;
  if (parts.size() == 1) {
    p.architecture = parts[0];
  } else if (parts.size() <= 3) {
    p.os = parts[0];
    p.architecture = parts[1];
    if (parts.size() == 3) p.variant = parts[2];
  }
  if (p.os.empty() || p.architecture.empty() || parts.size() > 3)
    throw Error("invalid platform \"" + s + "\": use os/arch[/variant]", EINVAL);
  return p;
}

const Descriptor& select_platform(const Index& index, const Platform& want,
                                  const std::string& ref) {
  const Descriptor* fallback = nullptr;
  std::string available;
  for (auto& d : index.manifests) {
    if (!d.platform) continue;
    const Platform& p = *d.platform;
    if (p.os == "unknown") continue;  // attestations
    available += (available.empty() ? "" : ", ") + p.str();
    if (p.os != want.os || p.architecture != want.architecture) continue;
    if (want.variant.empty() || p.variant == want.variant) {
      if (p.variant.empty() || want.variant == p.variant) return d;
      if (!fallback) fallback = &d;
    }
    if (want.architecture == "arm64" && p.variant.empty()) return d;  // arm64 == arm64/v8
  }
  if (fallback) return *fallback;
  throw Error("no image for platform " + want.str() + " in " + ref +
                  " (available: " + (available.empty() ? "none" : available) + ")",
              ENOENT);
}

ImageConfig parse_image_config(const std::string& body) {
  json j = parse_json(body, "image config");
  ImageConfig c;
  try {
    for (auto& d : j.at("rootfs").at("diff_ids")) {
      std::string s = d.get<std::string>();
      validate_digest(s);
      c.diff_ids.push_back(s);
    }
    c.platform.os = j.value("os", "linux");
    c.platform.architecture = j.value("architecture", "");
    c.platform.variant = j.value("variant", "");
  } catch (const json::exception& e) {
    bad("image config", "malformed: " + json_error_text(e.what()));
  }
  c.raw = std::move(j);
  return c;
}

LayerCompression layer_compression(const std::string& mt) {
  if (mt.find("foreign") != std::string::npos || mt.find("nondistributable") != std::string::npos)
    throw Error("layer media type " + mt + " (foreign layer) is not supported", ENOTSUP);
  if (mt.ends_with("+zstd") || mt.ends_with(".zstd")) return LayerCompression::zstd;
  if (mt.ends_with("+gzip") || mt.ends_with(".gzip") ||
      mt == "application/vnd.docker.image.rootfs.diff.tar.gzip")
    return LayerCompression::gzip;
  if (mt.ends_with(".tar") || mt == "application/vnd.oci.image.layer.v1.tar")
    return LayerCompression::none;
  throw Error("unknown layer media type \"" + mt + "\"", ENOTSUP);
}

}  // namespace racker::image
