// OCI image index/manifest and Docker schema2 list/manifest, parsed into one shape; platform
// selection; the parts of the image config the store needs.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace racker::image {

namespace media {
inline constexpr const char* oci_index = "application/vnd.oci.image.index.v1+json";
inline constexpr const char* oci_manifest = "application/vnd.oci.image.manifest.v1+json";
inline constexpr const char* oci_config = "application/vnd.oci.image.config.v1+json";
inline constexpr const char* docker_list =
    "application/vnd.docker.distribution.manifest.list.v2+json";
inline constexpr const char* docker_manifest =
    "application/vnd.docker.distribution.manifest.v2+json";
inline constexpr const char* docker_config = "application/vnd.docker.container.image.v1+json";
}  // namespace media

struct Platform {
  std::string os = "linux";
  std::string architecture;
  std::string variant;
  std::string str() const;
};

struct Descriptor {
  std::string media_type;
  std::string digest;
  int64_t size = 0;
  std::optional<Platform> platform;
  std::vector<std::string> urls;
};

struct Manifest {
  std::string media_type;
  Descriptor config;
  std::vector<Descriptor> layers;
};

struct Index {
  std::string media_type;
  std::vector<Descriptor> manifests;
};

bool is_index_media_type(const std::string& mt);
// Detects the media type from the body when the server's Content-Type is vague.
std::string sniff_media_type(const std::string& body, const std::string& content_type);
// Throws racker::Error "manifest sha256:..: ..." naming what is wrong (schema1, foreign layers,
// missing fields).
Manifest parse_manifest(const std::string& body, const std::string& what);
Index parse_index(const std::string& body, const std::string& what);

Platform host_platform();

// Debian's architecture names and the OCI platforms they are: amd64, i386, arm64, armhf,
// armel, ppc64el, riscv64, s390x, mips64el (data, for bake --arch and pkgprobe --arch).
struct DebianArch {
  const char* debian;   // "ppc64el"
  const char* oci;      // "ppc64le"
  const char* variant;  // "v7" for armhf, "" when none
};
const std::vector<DebianArch>& debian_archs();
// "arm64" -> linux/arm64/v8; throws EINVAL naming the known names.
Platform platform_of_debian_arch(const std::string& debian_arch);
// The Debian name of an OCI platform's architecture ("arm64" for linux/arm64), "" when none.
std::string debian_arch_of(const Platform& p);
// "linux/arm64/v8", "linux/amd64", "arm64" -> Platform; throws on junk.
Platform parse_platform(const std::string& s);
// Picks the manifest for platform p; throws naming the available platforms when none fits.
const Descriptor& select_platform(const Index& index, const Platform& p, const std::string& ref);

struct ImageConfig {
  std::vector<std::string> diff_ids;
  Platform platform;
  nlohmann::json raw;  // the whole config
};
ImageConfig parse_image_config(const std::string& body);

enum class LayerCompression { none, gzip, zstd };
// Layer media types (OCI and Docker); throws for foreign/non-distributable layers.
LayerCompression layer_compression(const std::string& media_type);

}  // namespace racker::image
