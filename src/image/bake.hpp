// Baking OS images from a distribution's package archive: mmdebstrap builds a root filesystem
// tarball (cached under <cache>/<key>.tar, keyed by everything that shapes it), which becomes a
// one-layer image (gzip) with a minimal config (PATH, Cmd /bin/bash, this host's platform),
// recorded under a name like any pulled image. Debian and Ubuntu are supported; Ubuntu needs
// the Ubuntu archive keyring on the host.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "image/content_store.hpp"
#include "image/image_store.hpp"
#include "image/manifest.hpp"

namespace racker::image {

// Distributions bake knows, with their default suites, for --help and messages.
struct BakeDistro {
  const char* name;
  const char* default_suite;
};
const std::vector<BakeDistro>& bake_distros();

inline constexpr const char* kUbuntuKeyring = "/usr/share/keyrings/ubuntu-archive-keyring.gpg";

struct BakeOptions {
  std::string distro;  // "debian" or "ubuntu"
  std::string suite;   // "" = the distribution's default (bookworm, noble)
  std::string variant = "minbase";
  std::vector<std::string> include;  // extra packages
  std::string mirror;                // "" = the distribution's (and its updates and security)
  // Debian architecture name ("" = this machine's). A foreign one is built by mmdebstrap
  // through qemu-user: binfmt_misc must run its programs (engine::ensure_runnable_arch).
  std::string arch;
  std::string name;       // "" = "<distro>:<suite>"
  std::string cache_dir;  // "" = <store root>/bake-cache
  bool quiet = false;     // mmdebstrap's own output off
  std::string mmdebstrap = "mmdebstrap";
  std::function<void(const std::string&)> on_status;  // progress lines for humans
};

struct BakeResult {
  ImageRecord record;
  std::string name;        // canonical
  std::string rootfs_tar;  // the cached tarball used
  bool from_cache = false;
};

// Checks the options (distro, names of suite, variant, packages) and fills in the defaults;
// throws racker::Error naming what is wrong or unsupported.
BakeOptions normalize_bake_options(const BakeOptions& o);
// sha256 (first 32 hex digits) over distro, suite, variant, sorted packages, mirror and the
// architecture: the rootfs tarball's name in the cache.
std::string bake_cache_key(const BakeOptions& normalized, const std::string& arch);
// The mmdebstrap command line that builds the rootfs tarball into out.
std::vector<std::string> mmdebstrap_argv(const BakeOptions& normalized, const std::string& out);

struct LayerBlob {
  std::string digest;   // of the gzip blob
  std::string diff_id;  // of the uncompressed tar
  uint64_t size = 0;
};
// Turns a rootfs tarball (read from in_fd) into a gzip layer blob in the content store,
// leaving out the entries below ./dev (device nodes a container runtime provides itself).
// tmp_dir holds the blob while its digest is computed.
LayerBlob rootfs_tar_to_layer(int in_fd, ContentStore& content, const std::string& tmp_dir);
// The uncompressed layer tar that produce hands to its sink -> a gzip layer blob in the store.
LayerBlob store_layer(
    ContentStore& content, const std::string& tmp_dir,
    const std::function<void(const std::function<void(const void*, size_t)>&)>& produce);
// A directory (a provisioned overlay upper, whiteouts already OCI .wh. files) -> a gzip layer
// blob: the tree as tar -c of it (image/tar.hpp write_tree), without ./dev/*, as for rootfs
// tarballs.
LayerBlob tree_to_layer(const std::string& dir, ContentStore& content, const std::string& tmp_dir);

// A root filesystem tarball (uncompressed, gzip, zstd or xz) as a one-layer image with a minimal
// config (PATH, Cmd /bin/bash, created = the tarball's mtime so a re-import gives the same id),
// stored and named: what bake and postroj's tarball sources (cloud images) make of a tarball.
struct RootfsImage {
  std::string name;        // canonical reference
  std::string created_by;  // its one history entry
  Platform platform;
};
ImageRecord import_rootfs_tarball(ContentStore& content, ImageStore& images,
                                  const std::string& tarball, const RootfsImage& what,
                                  const std::function<void(const std::string&)>& on_status = {});

// Builds (or takes from the cache) the rootfs, then stores and names the image.
BakeResult bake_image(ContentStore& content, ImageStore& images, const BakeOptions& o);

}  // namespace racker::image
