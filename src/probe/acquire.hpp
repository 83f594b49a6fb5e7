// Getting a catalog image ready to boot: bake it (with systemd) or pull it, then provision
// systemd and what probes need with engine::ensure_systemd, and name the result
// postroj.local/<label> in racker's store.
#pragma once

#include <functional>
#include <optional>
#include <string>

#include "engine/rootless.hpp"
#include "image/image_store.hpp"
#include "probe/catalog.hpp"

namespace racker::probe {

struct AcquireOptions {
  std::string store_root = engine::default_store_root();
  std::string state_root = engine::default_state_root();
  std::string bake_cache;  // "" = <store root>/bake-cache
  std::string registries_conf;
  std::string download_cache;  // tarball sources; "" = default_download_cache()
  std::string arch;    // Debian architecture ("" = this machine's): foreign ones through qemu-user
  bool force = false;  // bake/pull and provision again even when the image is there
  std::function<void(const std::string&)> on_status;
};

// The packages a baked image of a family gets at bake time so it boots without provisioning.
std::vector<std::string> bake_packages(const CatalogEntry& e);

// What provisioning adds to a probe image besides systemd: fresh package lists and a
// volatile journal (shell commands for engine::ProvisionOptions::extra_commands).
std::vector<std::string> probe_image_commands(const CatalogEntry& e);

// The ready image of a label (for arch, a Debian name, "" = this machine's), if it is in the
// store.
std::optional<image::ImageRecord> find_ready_image(const std::string& store_root,
                                                   const CatalogEntry& e,
                                                   const std::string& arch = "");

// The sha256 hex a SHA256SUMS text gives for file_name ("<hex> *name" or "<hex>  name"
// lines), "" when it names no such file.
std::string sha256sums_entry(const std::string& sums_text, const std::string& file_name);
// Bakes or pulls, provisions and names the image; returns its record. Throws racker::Error
// prefixed "LABEL: ".
image::ImageRecord acquire_image(const CatalogEntry& e, const AcquireOptions& o);

}  // namespace racker::probe
