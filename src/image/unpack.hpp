// Layer unpacking: turns an OCI/Docker layer (a tar stream, optionally gzip or zstd compressed)
// into a directory laid out for use as an overlayfs lower layer (OCI whiteouts become overlay
// whiteouts). It runs as root on untrusted input, so it must never create, change or link to
// anything outside the target directory, whatever paths, symlinks or hardlinks the layer holds.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace racker::image {

enum class Compression {
  none,
  gzip,
  zstd,
  xz,      // rootfs tarballs (cloud images); docker load takes xz layers too
  detect,  // sniff the magic bytes: gzip, zstd, xz, otherwise an uncompressed tar
};

// What unpacking one layer could not settle alone, because it depends on the lower layers
// (which may still be unpacking): fix_up_layer applies it once they are complete.
struct LayerFixups {
  // directories made for entries whose parents the layer lacks (0755 root): they take the
  // owner and mode of the directory a lower layer has there (a sticky /tmp stays 1777)
  std::vector<std::string> implicit_dirs;
  // whiteouts made: one that hides nothing below is removed (overlayfs would show it as a
  // 0:0 device that cannot be opened)
  std::vector<std::string> whiteouts;
};

struct UnpackStats {
  uint64_t entries = 0;  // filesystem entries in the tar (whiteouts included, meta headers not)
  uint64_t bytes = 0;    // size of the uncompressed tar stream
  std::string diff_id;   // "sha256:<hex>" of the uncompressed tar stream, trailing data included
  LayerFixups fixups;
};

// A decompression bomb: a layer is refused once its uncompressed stream passes both min_bytes
// and ratio times its compressed size (fd's size; only min_bytes when fd is not a file).
// The defaults let every real image through (the largest layers seen are a few GiB at
// ratios below 20) and stop a few MiB from filling the disk with GiBs of zeros.
struct ExpansionLimit {
  uint64_t min_bytes = uint64_t{1} << 30;
  uint64_t ratio = 100;
  std::string what = "layer";  // named in the error
};
// The limits from $RACKER_MAX_LAYER_SIZE (bytes, suffixes k/m/g) and $RACKER_MAX_LAYER_RATIO,
// else the defaults. Throws racker::Error naming a variable that cannot be parsed.
ExpansionLimit expansion_limit_from_env();

// Reads a layer from fd until EOF and creates its contents under target_dir, an existing, empty
// directory. Throws racker::Error naming the entry on any problem; on error the caller removes
// target_dir. Needs root for ownership, device nodes and trusted.* xattrs.
// lower_dirs: the unpacked lower layers (topmost first). A hardlink to a file that only a
// lower layer has becomes a copy of that file (never a link out of target_dir).
UnpackStats unpack_layer(int fd, Compression c, const std::string& target_dir,
                         const std::vector<std::string>& lower_dirs = {},
                         const ExpansionLimit& limit = {});

// Applies f to the unpacked layer at target_dir against its complete lower layers (topmost
// first). Idempotent. Throws racker::Error.
void fix_up_layer(const std::string& target_dir, const std::vector<std::string>& lower_dirs,
                  const LayerFixups& f);

}  // namespace racker::image
