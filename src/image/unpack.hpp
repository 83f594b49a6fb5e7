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
  detect,  // sniff the magic bytes: gzip, zstd, otherwise an uncompressed tar
};

struct UnpackStats {
  uint64_t entries = 0;  // filesystem entries in the tar (whiteouts included, meta headers not)
  uint64_t bytes = 0;    // size of the uncompressed tar stream
  std::string diff_id;   // "sha256:<hex>" of the uncompressed tar stream, trailing data included
};

// Reads a layer from fd until EOF and creates its contents under target_dir, an existing, empty
// directory. Throws racker::Error naming the entry on any problem; on error the caller removes
// target_dir. Needs root for ownership, device nodes and trusted.* xattrs.
// lower_dirs: the unpacked lower layers (topmost first). A hardlink to a file that only a
// lower layer has becomes a copy of that file (never a link out of target_dir).
UnpackStats unpack_layer(int fd, Compression c, const std::string& target_dir,
                         const std::vector<std::string>& lower_dirs = {});

}  // namespace racker::image
