// The one way an image enters the store, whatever it came from (a registry, an archive, a
// baked rootfs): its manifest, config and layer blobs are stored verified in the content store,
// missing layers are unpacked once (diff_ids checked against the config) and the image is
// recorded under its names. The importer knows nothing of registries or archive formats: a
// BlobSource hands it the bytes of blobs the store lacks.
#pragma once

#include <cstddef>
#include <functional>
#include <string>
#include <vector>

#include "image/content_store.hpp"
#include "image/image_store.hpp"
#include "image/manifest.hpp"
#include "image/unpack.hpp"

namespace racker::image {

// The record of an image as the store keeps it: one LayerRecord per manifest layer with its
// diff_id and chain id, the platform from the config (fallback when the config has none).
// Throws if the manifest and the config disagree on the number of layers.
ImageRecord make_image_record(const Manifest& m, const std::string& manifest_digest,
                              const ImageConfig& cfg, const Platform& fallback);

// How a stored layer blob is decompressed for unpacking.
Compression unpack_compression(const std::string& layer_media_type);

// Unpacks layer i of rec from its stored blob into layers/<chain>/fs, unless already done,
// checking its diff_id. Lower layers 0..i-1 are passed for the hardlink fallback; a hardlink to
// a lower layer that is not unpacked yet fails with ENOENT.
void unpack_stored_layer(const ContentStore& content, ImageStore& images, const ImageRecord& rec,
                         size_t i);
// After every layer of rec is complete: applies what unpacking recorded for later (each
// layer's fixups.json, LayerFixups), bottom up, and removes the records. Idempotent.
void fix_up_layers(ImageStore& images, const ImageRecord& rec);

// Where the importer reads the blobs the content store does not have yet.
class BlobSource {
 public:
  virtual ~BlobSource() = default;
  // Streams the blob's bytes, in order, to sink; throws racker::Error if it cannot.
  virtual void read(const Descriptor& d,
                    const std::function<void(const void*, size_t)>& sink) const = 0;
  // Where the blob comes from, for messages ("abc/layer.tar"); the digest by default.
  virtual std::string where(const Descriptor& d) const { return d.digest; }
};

struct ImportItem {
  std::string manifest;                // an image manifest body, OCI or Docker schema2
  std::string manifest_digest;         // expected digest; "" = the body's
  std::vector<std::string> names;      // canonical references; none leaves the image unnamed
  const BlobSource* source = nullptr;  // nullptr: every blob must already be stored
};

struct ImportResult {
  ImageRecord record;              // as stored, with all its names
  std::vector<std::string> names;  // the names this import gave it
  bool existed = false;  // the store had this image id already (only its names were added)
};

// Imports every item, all or nothing: blobs are stored (verified against their digests) and
// layers unpacked first; only when all of that worked are the images recorded. On failure
// the blobs and layers this call added and no image refers to are removed again, so the store
// is as it was. fallback_platform names an image whose config has no architecture.
std::vector<ImportResult> import_images(ContentStore& content, ImageStore& images,
                                        const std::vector<ImportItem>& items,
                                        const Platform& fallback_platform);

}  // namespace racker::image
