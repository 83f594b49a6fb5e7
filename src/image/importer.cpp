#include "image/importer.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <set>

#include "base/clock.hpp"
#include "base/error.hpp"
#include "base/fd.hpp"
#include "base/fs.hpp"
#include "image/digest.hpp"
#include "image/gc.hpp"
#include "image/unpack.hpp"

#include <nlohmann/json.hpp>

namespace racker::image {

ImageRecord make_image_record(const Manifest& m, const std::string& manifest_digest,
                              const ImageConfig& cfg, const Platform& fallback) {
  if (cfg.diff_ids.size() != m.layers.size())
    throw Error("manifest " + manifest_digest + " has " + std::to_string(m.layers.size()) +
                    " layers but its config lists " + std::to_string(cfg.diff_ids.size()),
                EINVAL);
  ImageRecord rec;
  rec.id = m.config.digest;
  rec.manifest_digest = manifest_digest;
  rec.config_digest = m.config.digest;
  rec.platform = cfg.platform.architecture.empty() ? fallback.str() : cfg.platform.str();
  rec.created = now_rfc3339();
  std::string parent;
  for (size_t i = 0; i < m.layers.size(); ++i) {
    LayerRecord l;
    l.digest = m.layers[i].digest;
    l.media_type = m.layers[i].media_type;
    l.diff_id = cfg.diff_ids[i];
    l.chain_id = chain_id(parent, l.diff_id);
    l.size = static_cast<uint64_t>(m.layers[i].size);
    parent = l.chain_id;
    rec.size += l.size;
    rec.layers.push_back(l);
  }
  return rec;
}

Compression unpack_compression(const std::string& media_type) {
  switch (layer_compression(media_type)) {
    case LayerCompression::gzip:
      return Compression::gzip;
    case LayerCompression::zstd:
      return Compression::zstd;
    case LayerCompression::none:
      return Compression::none;
  }
  return Compression::detect;
}

void unpack_stored_layer(const ContentStore& content, ImageStore& images, const ImageRecord& rec,
                         size_t i) {
  const LayerRecord& l = rec.layers.at(i);
  std::vector<std::string> lowers;  // topmost first
  for (size_t k = i; k-- > 0;) lowers.push_back(images.layer_dir(rec.layers[k].chain_id) + "/fs");
  images.ensure_layer(l.chain_id, [&](const std::string& dir) {
    UniqueFd fd(::open(content.blob_path(l.digest).c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) throw_errno("open blob " + l.digest);
    ExpansionLimit limit = expansion_limit_from_env();
    limit.what = "layer " + l.digest;
    auto stats = unpack_layer(fd.get(), unpack_compression(l.media_type), dir, lowers, limit);
    if (stats.diff_id != l.diff_id)
      throw Error("uncompressed layer has digest " + stats.diff_id + ", config says " + l.diff_id,
                  EINVAL);
    // settled by fix_up_layers once every lower layer is complete (they may be unpacking now)
    const LayerFixups& f = stats.fixups;
    if (!f.implicit_dirs.empty() || !f.whiteouts.empty())
      write_file_atomic(
          dir.substr(0, dir.rfind('/')) + "/fixups.json",
          nlohmann::json{{"implicit_dirs", f.implicit_dirs}, {"whiteouts", f.whiteouts}}.dump());
  });
}

void fix_up_layers(ImageStore& images, const ImageRecord& rec) {
  for (size_t i = 0; i < rec.layers.size(); ++i) {  // bottom up: each against settled lowers
    const LayerRecord& l = rec.layers[i];
    std::string dir = images.layer_dir(l.chain_id);
    auto text = read_file_if_exists(dir + "/fixups.json");
    if (!text) continue;
    LayerFixups f;
    try {
      auto j = nlohmann::json::parse(*text);
      f.implicit_dirs = j.at("implicit_dirs").get<std::vector<std::string>>();
      f.whiteouts = j.at("whiteouts").get<std::vector<std::string>>();
    } catch (const std::exception&) {
      throw Error("layer " + l.digest + ": unreadable " + dir + "/fixups.json", EINVAL);
    }
    std::vector<std::string> lowers;  // topmost first
    for (size_t k = i; k-- > 0;) lowers.push_back(images.layer_dir(rec.layers[k].chain_id) + "/fs");
    fix_up_layer(dir + "/fs", lowers, f);
    ::unlink((dir + "/fixups.json").c_str());
  }
}

namespace {

// What one import_images call added to the store, to be taken back if it fails.
struct Added {
  std::vector<std::string> blobs;
  std::vector<std::string> layers;  // chain ids
};

// Stores d from src unless the store has it; the bytes are verified by the ingest's commit.
void store_blob(ContentStore& content, const BlobSource* src, const Descriptor& d, Added& added) {
  if (content.has(d.digest)) return;
  if (!src) throw Error("blob " + d.digest + " is not in the store", ENOENT);
  try {
    auto ingest = content.begin_ingest(d.digest, d.size);
    if (!ingest) return;  // committed meanwhile by someone else
    ingest->reset();      // a leftover partial: we read from the start
    src->read(d, [&](const void* p, size_t n) { ingest->write(p, n); });
    ingest->commit();
    added.blobs.push_back(d.digest);
  } catch (const Error& e) {
    std::string where = src->where(d);
    throw e.with_context(where == d.digest ? "blob " + d.digest : where);
  }
}

void roll_back(ContentStore& content, ImageStore& images, const Added& added) {
  std::set<std::string> only(added.blobs.begin(), added.blobs.end());
  only.insert(added.layers.begin(), added.layers.end());
  collect_garbage(content, images, &only);  // unless an image or a lease uses them meanwhile
}

ImportResult import_one(ContentStore& content, ImageStore& images, const ImportItem& item,
                        const Platform& fallback, Added& added) {
  std::string manifest_digest =
      item.manifest_digest.empty() ? sha256_digest(item.manifest) : item.manifest_digest;
  try {
    Manifest m = parse_manifest(item.manifest, "manifest " + manifest_digest);
    if (auto existing = images.find(m.config.digest); existing && existing->id == m.config.digest)
      return {*existing, {}, true};
    if (!content.has(manifest_digest)) {
      content.put_blob(item.manifest, manifest_digest);
      added.blobs.push_back(manifest_digest);
    }
    store_blob(content, item.source, m.config, added);
    ImageConfig cfg;
    try {
      cfg = parse_image_config(content.read_blob(m.config.digest));
    } catch (const Error& e) {
      throw e.with_context("config " + m.config.digest);
    }
    ImageRecord rec = make_image_record(m, manifest_digest, cfg, fallback);
    for (size_t i = 0; i < rec.layers.size(); ++i) {
      const LayerRecord& l = rec.layers[i];
      try {
        store_blob(content, item.source, m.layers[i], added);
        if (images.layer_complete(l.chain_id)) continue;
        unpack_stored_layer(content, images, rec, i);
        added.layers.push_back(l.chain_id);
      } catch (const Error& e) {
        throw e.with_context("layer " + std::to_string(i + 1) + "/" +
                             std::to_string(rec.layers.size()));
      }
    }
    fix_up_layers(images, rec);
    return {rec, {}, false};
  } catch (const Error& e) {
    throw e.with_context(item.names.empty() ? "image " + manifest_digest : item.names[0]);
  }
}

}  // namespace

std::vector<ImportResult> import_images(ContentStore& content, ImageStore& images,
                                        const std::vector<ImportItem>& items,
                                        const Platform& fallback_platform) {
  std::vector<ImportResult> out;
  Added added;
  try {
    for (auto& item : items)
      out.push_back(import_one(content, images, item, fallback_platform, added));
  } catch (...) {
    try {
      roll_back(content, images, added);
    } catch (const Error&) {
      // the original failure matters more; what is left is unreferenced and verified
    }
    throw;
  }
  for (size_t i = 0; i < items.size(); ++i) {
    out[i].names = items[i].names;
    const ImageRecord& rec = out[i].record;
    if (items[i].names.empty()) {
      if (!out[i].existed) images.put(rec, "");
      continue;
    }
    for (auto& name : items[i].names) images.put(rec, name);
  }
  // the records as stored (names merged)
  for (auto& r : out)
    if (auto stored = images.find(r.record.id); stored && stored->id == r.record.id)
      r.record = *stored;
  return out;
}

}  // namespace racker::image
