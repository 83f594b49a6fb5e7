#include "image/image_store.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include <nlohmann/json.hpp>

#include "base/error.hpp"
#include "base/fd.hpp"
#include "base/file_lock.hpp"
#include "base/fs.hpp"
#include "base/strings.hpp"
#include "image/digest.hpp"

namespace racker::image {
namespace {

using nlohmann::json;

json to_json(const ImageRecord& r) {
  json layers = json::array();
  for (auto& l : r.layers)
    layers.push_back({{"digest", l.digest},
                      {"mediaType", l.media_type},
                      {"diffID", l.diff_id},
                      {"chainID", l.chain_id},
                      {"size", l.size}});
  return {{"id", r.id},
          {"manifest", r.manifest_digest},
          {"config", r.config_digest},
          {"platform", r.platform},
          {"layers", layers},
          {"names", r.names},
          {"created", r.created},
          {"size", r.size}};
}

ImageRecord from_json(const json& j) {
  ImageRecord r;
  r.id = j.at("id");
  r.manifest_digest = j.at("manifest");
  r.config_digest = j.at("config");
  r.platform = j.value("platform", "");
  for (auto& l : j.at("layers"))
    r.layers.push_back({l.at("digest"), l.value("mediaType", ""), l.at("diffID"), l.at("chainID"),
                        l.value("size", uint64_t{0})});
  r.names = j.value("names", std::vector<std::string>{});
  r.created = j.value("created", "");
  r.size = j.value("size", uint64_t{0});
  return r;
}

// docker.io/library/debian:bookworm -> debian:bookworm, for matching what users type
std::string short_name(const std::string& n) {
  std::string s = n;
  if (s.starts_with("docker.io/library/"))
    s = s.substr(18);
  else if (s.starts_with("docker.io/"))
    s = s.substr(10);
  return s;
}

}  // namespace

std::string chain_id(const std::string& parent_chain, const std::string& diff_id) {
  if (parent_chain.empty()) return diff_id;
  return sha256_digest(parent_chain + " " + diff_id);
}

ImageStore::ImageStore(std::string root) : root_(std::move(root)) {}

template <typename Fn>
auto ImageStore::locked(Fn fn) const {
  mkdir_p(root_ + "/images", 0700);
  FileLock lock(root_ + "/images/lock");
  return fn();
}

std::vector<ImageRecord> ImageStore::load() const {
  std::vector<ImageRecord> out;
  auto text = read_file_if_exists(root_ + "/images/index.json");
  if (!text) return out;
  try {
    json doc = json::parse(*text);  // named: a range-for over a temporary's member dangles
    for (auto& j : doc.at("images")) out.push_back(from_json(j));
  } catch (const json::exception& e) {
    throw Error("corrupt image index " + root_ + "/images/index.json: " + e.what(), EINVAL);
  }
  return out;
}

void ImageStore::save(const std::vector<ImageRecord>& all) const {
  json arr = json::array();
  for (auto& r : all) arr.push_back(to_json(r));
  write_file_atomic(root_ + "/images/index.json", json{{"images", arr}}.dump(1), 0600);
}

std::vector<ImageRecord> ImageStore::list() const {
  return locked([&] { return load(); });
}

std::optional<ImageRecord> ImageStore::find(const std::string& q) const {
  auto all = list();
  for (auto& r : all)
    for (auto& n : r.names)
      if (n == q || short_name(n) == q || short_name(n) == q + ":latest" || n == q + ":latest")
        return r;
  std::string hex = q.starts_with("sha256:") ? q.substr(7) : q;
  if (hex.size() < 4) return std::nullopt;
  std::optional<ImageRecord> hit;
  for (auto& r : all) {
    if (r.id.substr(7).starts_with(hex)) {
      if (hit) throw Error("image id prefix \"" + q + "\" is ambiguous", EINVAL);
      hit = r;
    }
  }
  return hit;
}

void ImageStore::put(const ImageRecord& rec, const std::string& name) {
  locked([&] {
    auto all = load();
    for (auto& r : all) std::erase(r.names, name);
    auto it = std::find_if(all.begin(), all.end(), [&](auto& r) { return r.id == rec.id; });
    if (it == all.end()) {
      all.push_back(rec);
      it = all.end() - 1;
      it->names.clear();
    } else {
      auto names = it->names;
      *it = rec;
      it->names = names;
    }
    if (!name.empty()) it->names.push_back(name);
    save(all);
    return 0;
  });
}

std::optional<ImageRecord> ImageStore::untag(const std::string& name) {
  return locked([&]() -> std::optional<ImageRecord> {
    auto all = load();
    for (auto it = all.begin(); it != all.end(); ++it) {
      auto n = std::find_if(it->names.begin(), it->names.end(), [&](auto& x) {
        return x == name || short_name(x) == name || short_name(x) == name + ":latest";
      });
      if (n == it->names.end()) continue;
      it->names.erase(n);
      std::optional<ImageRecord> last;
      if (it->names.empty()) {
        last = *it;
        all.erase(it);
      }
      save(all);
      return last;
    }
    throw Error("no such image: " + printable(name), ENOENT, ErrorKind::not_found);
  });
}

void ImageStore::remove(const std::string& id) {
  locked([&] {
    auto all = load();
    std::erase_if(all, [&](auto& r) { return r.id == id; });
    save(all);
    return 0;
  });
}

std::string ImageStore::layer_dir(const std::string& chain) const {
  return root_ + "/layers/" + digest_hex(chain);
}

bool ImageStore::layer_complete(const std::string& chain) const {
  return path_exists(layer_dir(chain) + "/done");
}

void ImageStore::ensure_layer(const std::string& chain,
                              const std::function<void(const std::string&)>& fill) {
  std::string dir = layer_dir(chain);
  mkdir_p(root_ + "/layers", 0700);
  FileLock lock(dir + ".lock", FileLock::File::transient);
  if (path_exists(dir + "/done")) return;
  // an interrupted earlier attempt leaves a dir without "done": start over
  remove_tree(dir);
  mkdir_p(dir + "/fs", 0755);
  try {
    fill(dir + "/fs");
  } catch (...) {
    remove_tree(dir);
    throw;
  }
  write_file_atomic(dir + "/done", chain);
}

void ImageStore::remove_layer(const std::string& chain) {
  std::string dir = layer_dir(chain);
  FileLock lock(dir + ".lock", FileLock::File::transient);
  ::unlink((dir + "/done").c_str());
  remove_tree(dir);
}

std::vector<std::string> ImageStore::layers_on_disk() const {
  std::vector<std::string> out;
  DIR* d = ::opendir((root_ + "/layers").c_str());
  if (!d) return out;
  while (auto* e = ::readdir(d)) {
    std::string n = e->d_name;
    if (n.size() == 64) out.push_back("sha256:" + n);
  }
  ::closedir(d);
  return out;
}

}  // namespace racker::image
