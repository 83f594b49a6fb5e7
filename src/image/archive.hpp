// Image archives: reading and writing images as files rather than through a registry.
//
//   docker-archive  a tar as `docker save` writes it: manifest.json (Config, RepoTags, Layers),
//                   <config>.json and <id>/layer.tar, or blobs/sha256/<hex> (docker >= 25)
//   oci-dir         an OCI image layout directory: oci-layout, index.json, blobs/sha256/<hex>
//   oci-archive     a tar of an OCI image layout
//
// Reading opens an archive (a file, possibly gzip or zstd compressed, a layout directory, or a
// stream spooled to a temporary file), checks that it is complete and hands its images to the
// importer (importer.hpp), which stores and verifies them. Nothing in an archive is trusted: a
// member path is only ever looked up in the archive's own index, never opened on the host,
// and a layout directory is read with openat2(RESOLVE_IN_ROOT).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "image/content_store.hpp"
#include "image/image_store.hpp"
#include "image/importer.hpp"
#include "image/manifest.hpp"

namespace racker::image {

enum class ArchiveFormat { docker_archive, oci_archive, oci_dir };
std::string archive_format_name(ArchiveFormat f);
// "docker-archive", "oci-archive", "oci-dir" (also "oci"); throws naming the choices.
ArchiveFormat parse_archive_format(const std::string& s);

// Annotations of an OCI index entry that name the image.
inline constexpr const char* kRefNameAnnotation = "org.opencontainers.image.ref.name";
inline constexpr const char* kContainerdNameAnnotation = "io.containerd.image.name";

// One image found in an archive.
struct ArchivedImage {
  std::string manifest;  // as in the archive (OCI), or made from manifest.json (docker-archive)
  std::string manifest_digest;
  std::vector<std::string> names;                 // canonical references
  std::map<std::string, std::string> blob_paths;  // digest -> member path in the archive
};

// A member tree: a tar file indexed once, or a directory.
class ArchiveFiles;

class ImageArchive : public BlobSource {
 public:
  struct Options {
    std::string platform;                // picks from a multi-platform index; "" = this host's
    std::string spool_dir = "/var/tmp";  // where a stream or compressed archive is unpacked
  };

  // path: a tar file (plain, gzip or zstd) or an OCI layout directory.
  // Throws racker::Error naming the problem (without the path: callers add it as context).
  static std::unique_ptr<ImageArchive> open(const std::string& path, const Options& o);
  // A stream (stdin): spooled to an unnamed temporary file under o.spool_dir first.
  static std::unique_ptr<ImageArchive> open_stream(int fd, const Options& o);
  ~ImageArchive() override;

  ArchiveFormat format() const { return format_; }
  const std::vector<ArchivedImage>& images() const { return images_; }

  void read(const Descriptor& d,
            const std::function<void(const void*, size_t)>& sink) const override;
  std::string where(const Descriptor& d) const override;

 private:
  ImageArchive(std::unique_ptr<ArchiveFiles> files, bool is_dir, const Options& o);
  void parse_docker();
  void parse_oci();
  const std::string& path_of(const std::string& digest) const;

  std::unique_ptr<ArchiveFiles> files_;
  ArchiveFormat format_ = ArchiveFormat::docker_archive;
  std::vector<ArchivedImage> images_;
  std::map<std::string, std::string> all_blobs_;  // digest -> member path, over all images
  Options opts_;
};

// `racker load`: opens path ("" or "-": standard input) and imports every image in it, all or
// nothing. Errors carry the context "load <path>".
std::vector<ImportResult> load_archive(ContentStore& content, ImageStore& images,
                                       const std::string& path, const ImageArchive::Options& o);

struct SaveOptions {
  ArchiveFormat format = ArchiveFormat::docker_archive;
  std::string output;  // a file, a directory for oci-dir; "" or "-": standard output
};

// `racker save`: writes the named images (names or ids) from the store. A file is written
// under a temporary name and renamed into place, a directory likewise: a failed save leaves
// nothing behind. docker-archive layers are written uncompressed (as `docker save` does);
// the OCI formats copy the blobs as stored. Errors carry the context "save <image>".
void save_images(const ContentStore& content, const ImageStore& images,
                 const std::vector<std::string>& refs, const SaveOptions& o);

}  // namespace racker::image
