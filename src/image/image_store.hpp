// The image index and the unpacked layers of the store (default /var/lib/racker):
//   images/index.json         image records and their names, rewritten atomically under a lock
//   layers/<chain-hex>/fs     one unpacked layer, usable as an overlayfs lower directory
//   layers/<chain-hex>/done   written last: a layer without it is incomplete and redone
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace racker::image {

struct LayerRecord {
  std::string digest;  // the blob as stored (compressed)
  std::string media_type;
  std::string diff_id;   // sha256 of the uncompressed tar
  std::string chain_id;  // identifies the layer together with its parents
  uint64_t size = 0;
};

struct ImageRecord {
  std::string id;  // the config digest, docker's image id
  std::string manifest_digest;
  std::string config_digest;
  std::string platform;  // os/arch[/variant]
  std::vector<LayerRecord> layers;
  std::vector<std::string> names;  // canonical references naming this image
  std::string created;             // when it entered the store
  uint64_t size = 0;               // sum of the compressed layers
};

// chain_id(parent, diff_id): the OCI image spec's ChainID step.
std::string chain_id(const std::string& parent_chain, const std::string& diff_id);

class ImageStore {
 public:
  explicit ImageStore(std::string root);
  const std::string& root() const { return root_; }

  std::vector<ImageRecord> list() const;
  // By canonical name, short docker-style name, full id or a unique id prefix (>= 4 hex).
  std::optional<ImageRecord> find(const std::string& name_or_id) const;
  // Adds or updates the record (by id) and points `name` at it (taking it from any other image).
  void put(const ImageRecord& rec, const std::string& name);
  // Removes a name; returns the image record when it was its last name (the caller may then
  // delete its unreferenced layers and blobs).
  std::optional<ImageRecord> untag(const std::string& name);
  void remove(const std::string& id);

  std::string layer_dir(const std::string& chain_id) const;  // .../layers/<hex>
  bool layer_complete(const std::string& chain_id) const;
  // Runs fill(tmpdir) to create a layer's fs/ once, under a per-layer lock, and moves it into
  // place; concurrent callers for the same layer wait and reuse the result.
  void ensure_layer(const std::string& chain_id,
                    const std::function<void(const std::string&)>& fill);
  void remove_layer(const std::string& chain_id);
  std::vector<std::string> layers_on_disk() const;

 private:
  template <typename Fn>
  auto locked(Fn fn) const;
  std::vector<ImageRecord> load() const;
  void save(const std::vector<ImageRecord>& all) const;
  std::string root_;
};

}  // namespace racker::image
