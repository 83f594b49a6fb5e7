// postroj's catalog of curated OS images: a JSON data file (data/postroj/catalog.json,
// compiled into the binary; --catalog FILE or $POSTROJ_CATALOG replaces it). Each entry names
// a label, where the image comes from (a bake recipe or a registry reference), its family and
// its package manager. Pure data handling: nothing here touches the store.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace racker::probe {

struct CatalogEntry {
  std::string label;  // "debian-bookworm"
  // Exactly one source: bake_distro (+ bake_suite), image_ref or tarball_url.
  std::string bake_distro;           // "debian", "ubuntu"
  std::string bake_suite;            // "bookworm"
  std::string image_ref;             // "docker.io/library/archlinux:latest"
  std::string family;                // debian, ubuntu, fedora, rhel, suse, arch
  std::string package_manager;       // apt, dnf, yum, microdnf, zypper, pacman
  std::vector<std::string> aliases;  // other names it answers to ("debian-12")
  std::string bake_mirror;           // a baked image's archive ("" = the distribution's)
  // A root filesystem tarball (the Ubuntu cloud images'), checked against a SHA256SUMS file
  // ("" = the SHA256SUMS next to it). "{arch}" in either stands for the Debian architecture.
  std::string tarball_url;
  std::string tarball_sums;

  bool baked() const { return !bake_distro.empty(); }
  bool from_tarball() const { return !tarball_url.empty(); }
  // "bake debian bookworm" or the registry reference, for humans.
  std::string source_text() const;
};

class Catalog {
 public:
  // Parses and validates a catalog document; `origin` (a path or "built-in catalog") prefixes
  // every error: `catalog.json: images[2]: unknown family "gentoo"`.
  static Catalog parse(std::string_view json_text, const std::string& origin);
  // The catalog to use: `path` when given, else $POSTROJ_CATALOG, else the built-in one.
  static Catalog load(const std::string& path = "");
  static std::string_view builtin_text();

  const std::vector<CatalogEntry>& entries() const { return entries_; }
  // By label or alias.
  const CatalogEntry* find(std::string_view label) const;
  // find(), or throws racker::Error "unknown image label "x" (known: a, b, ...)" (ENOENT).
  const CatalogEntry& at(std::string_view label) const;
  const std::string& origin() const { return origin_; }

 private:
  std::vector<CatalogEntry> entries_;
  std::string origin_;
};

// The name of a label's ready-to-boot image in racker's store: postroj.local/<label>:latest,
// or :<arch> for a foreign architecture (a Debian name; "" = this machine's).
std::string image_name_for(std::string_view label, std::string_view arch = "");
// The name under which the unprovisioned base (as baked or pulled) is kept.
std::string base_image_name_for(std::string_view label, std::string_view arch = "");
// A tarball source's URL with "{arch}" replaced.
std::string with_arch(const std::string& url, const std::string& debian_arch);

}  // namespace racker::probe
