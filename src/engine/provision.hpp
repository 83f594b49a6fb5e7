// Provisioning: an image without systemd gets it (and any extra packages) installed with its
// own package manager (apt, dnf/yum/microdnf, zypper, pacman) in a throwaway container on the
// host network; the container's upper directory becomes one more layer, stored as a derived
// image named racker.local/provisioned/<base id hex 12>-<packages key> and reused afterwards.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "engine/rootless.hpp"
#include "image/image_store.hpp"

namespace racker::engine {

struct ProvisionOptions {
  std::string store_root = engine::default_store_root();
  std::string state_root = engine::default_state_root();
  std::vector<std::string> extra_packages;  // installed together with systemd
  // shell commands run after the installation (e.g. masking units a probe image does not need)
  std::vector<std::string> extra_commands;
  bool force = false;                                 // rebuild even when the derived image exists
  std::function<void(const std::string&)> on_status;  // progress lines for humans
};

// The package manager family of a rootfs: "apt", "dnf", "yum", "microdnf", "zypper",
// "pacman", or "" when none is found.
std::string detect_package_manager(const std::string& rootfs);
// True when the image's layers hold an executable systemd (/lib/systemd/systemd or
// /usr/lib/systemd/systemd), found without mounting.
bool image_has_systemd(const image::ImageStore& images, const image::ImageRecord& rec);
// True when the image looks like a distribution image (an /etc/os-release and a known package
// manager), i.e. one `racker run` should boot.
bool image_is_os(const image::ImageStore& images, const image::ImageRecord& rec);

// base itself when it already has systemd and no extra packages or commands are asked for; else the
// derived image (made now, or found from an earlier run). Throws racker::Error naming the
// package manager command that failed, with its last output lines.
image::ImageRecord ensure_systemd(const image::ImageRecord& base, const ProvisionOptions& o);

}  // namespace racker::engine
