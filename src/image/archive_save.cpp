// Writing image archives (`save`).
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <set>

#include <nlohmann/json.hpp>

#include "base/error.hpp"
#include "base/fd.hpp"
#include "base/fs.hpp"
#include "image/archive.hpp"
#include "image/decompress.hpp"
#include "image/digest.hpp"
#include "image/reference.hpp"
#include "image/tar.hpp"

namespace racker::image {

using nlohmann::json;
using Sink = TarWriter::Sink;

namespace {
constexpr size_t kChunk = 1 << 20;
}  // namespace

// --- save ------------------------------------------------------------------------------------

namespace {

// Where the archive's files go: a tar stream or a directory.
class Output {
 public:
  virtual ~Output() = default;
  virtual void file(const std::string& path, uint64_t size,
                    const std::function<void(const Sink&)>& produce) = 0;
  void file(const std::string& path, const std::string& data) {
    file(path, data.size(), [&](const Sink& s) { s(data.data(), data.size()); });
  }
};

class TarOutput : public Output {
 public:
  explicit TarOutput(int fd) : tar_(fd) {}
  void file(const std::string& path, uint64_t size,
            const std::function<void(const Sink&)>& produce) override {
    std::string dir = path.substr(0, path.rfind('/') == std::string::npos ? 0 : path.rfind('/'));
    // parent directories first, as tar does
    for (size_t i = 0; !dir.empty() && i != std::string::npos;) {
      i = dir.find('/', i + 1);
      std::string d = dir.substr(0, i);
      if (dirs_.insert(d).second) tar_.add_dir(d);
    }
    tar_.add_file(path, size, produce);
  }
  void finish() { tar_.finish(); }

 private:
  TarWriter tar_;
  std::set<std::string> dirs_;
};

class DirOutput : public Output {
 public:
  explicit DirOutput(std::string dir) : dir_(std::move(dir)) {}
  void file(const std::string& path, uint64_t size,
            const std::function<void(const Sink&)>& produce) override {
    std::string full = dir_ + "/" + path;
    mkdir_p(full.substr(0, full.rfind('/')), 0755);
    UniqueFd fd(::open(full.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
    if (!fd) throw_errno("create " + full);
    uint64_t done = 0;
    produce([&](const void* p, size_t n) {
      if (!write_all(fd.get(), p, n)) throw_errno("write " + full);
      done += n;
    });
    if (done != size)
      throw Error(full + ": " + std::to_string(done) + " bytes instead of " + std::to_string(size),
                  EIO);
  }

 private:
  std::string dir_;
};

struct Selected {
  ImageRecord rec;
  std::vector<std::string> names;  // canonical, those asked for
};

std::vector<Selected> select_images(const ImageStore& images,
                                    const std::vector<std::string>& refs) {
  std::vector<Selected> out;
  for (auto& ref : refs) {
    auto rec = images.find(ref);
    if (!rec) throw Error("save " + ref + ": no such image", ENOENT, ErrorKind::not_found);
    // asked for by name: that name goes into the archive; by id: none
    std::optional<std::string> name;
    try {
      auto r = parse_reference(ref);
      if (r.digest.empty()) {
        std::string c = r.str();
        if (std::find(rec->names.begin(), rec->names.end(), c) != rec->names.end()) name = c;
      }
    } catch (const Error&) {
    }
    auto it = std::find_if(out.begin(), out.end(), [&](auto& s) { return s.rec.id == rec->id; });
    if (it == out.end()) {
      out.push_back({*rec, {}});
      it = out.end() - 1;
    }
    if (name && std::find(it->names.begin(), it->names.end(), *name) == it->names.end())
      it->names.push_back(*name);
  }
  return out;
}

uint64_t file_size(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) throw_errno("stat " + path);
  return static_cast<uint64_t>(st.st_size);
}

void copy_file(const std::string& path, const Sink& sink) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) throw_errno("open " + path);
  std::string buf(kChunk, '\0');
  for (;;) {
    ssize_t n = ::read(fd.get(), buf.data(), buf.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw_errno("read " + path);
    if (n == 0) return;
    sink(buf.data(), static_cast<size_t>(n));
  }
}

// The uncompressed bytes of a stored layer blob.
void decompress_file(const std::string& path, Compression c, const Sink& sink) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) throw_errno("open " + path);
  auto dec = make_decompressor(fd.get(), c);
  std::string buf(kChunk, '\0');
  for (;;) {
    size_t n = dec->read(reinterpret_cast<uint8_t*>(buf.data()), buf.size());
    if (n == 0) return;
    sink(buf.data(), n);
  }
}

// A stored blob for a layer: its own, or another image's blob with the same diff_id (a layer
// already unpacked from another image is not fetched again, so its blob may be absent).
const LayerRecord& stored_layer(const ContentStore& content, const std::vector<ImageRecord>& all,
                                const LayerRecord& l, bool same_digest_only) {
  if (content.has(l.digest)) return l;
  if (!same_digest_only)
    for (auto& r : all)
      for (auto& o : r.layers)
        if (o.diff_id == l.diff_id && content.has(o.digest)) return o;
  throw Error("layer blob " + l.digest + " is not in the store (pull the image again)", ENOENT);
}

void write_docker(const ContentStore& content, const ImageStore& images,
                  const std::vector<Selected>& sel, Output& out) {
  auto all = images.list();
  std::set<std::string> written;
  json manifest = json::array();
  json repositories = json::object();
  for (auto& s : sel) {
    try {
      std::string cfg_name = s.rec.config_digest.substr(7) + ".json";
      json layers = json::array();
      for (auto& l : s.rec.layers) {
        std::string dir = digest_hex(l.diff_id);
        std::string path = dir + "/layer.tar";
        layers.push_back(path);
        if (!written.insert(path).second) continue;
        try {
          const LayerRecord& src = stored_layer(content, all, l, false);
          std::string blob = content.blob_path(src.digest);
          Compression c = unpack_compression(src.media_type);
          if (c == Compression::none) {
            out.file(path, file_size(blob), [&](const Sink& sink) { copy_file(blob, sink); });
            continue;
          }
          // a tar header needs the size first: decompress once to count (and verify)
          uint64_t size = 0;
          Sha256 h;
          decompress_file(blob, c, [&](const void* p, size_t n) {
            h.update(p, n);
            size += n;
          });
          std::string got = h.digest();
          if (got != l.diff_id)
            throw Error("blob " + src.digest + " decompresses to " + got + ", not " + l.diff_id,
                        EIO);
          out.file(path, size, [&](const Sink& sink) { decompress_file(blob, c, sink); });
        } catch (const Error& e) {
          throw e.with_context("layer " + l.digest);
        }
      }
      if (written.insert(cfg_name).second)
        out.file(cfg_name, content.read_blob(s.rec.config_digest));
      json tags = json::array();
      std::string top = s.rec.layers.empty() ? "" : digest_hex(s.rec.layers.back().diff_id);
      for (auto& n : s.names) {
        Reference r = parse_reference(n);
        if (r.tag.empty()) continue;
        std::string fam = r.familiar();
        tags.push_back(fam);
        std::string repo = fam.substr(0, fam.size() - r.tag.size() - 1);
        repositories[repo][r.tag] = top;
      }
      manifest.push_back({{"Config", cfg_name},
                          {"RepoTags", tags.empty() ? json(nullptr) : tags},
                          {"Layers", layers}});
    } catch (const Error& e) {
      throw e.with_context("save " + (s.names.empty() ? s.rec.id : s.names[0]));
    }
  }
  out.file("manifest.json", manifest.dump());
  if (!repositories.empty()) out.file("repositories", repositories.dump());
}

void write_oci(const ContentStore& content, const std::vector<Selected>& sel, Output& out) {
  out.file("oci-layout", std::string(R"({"imageLayoutVersion":"1.0.0"})"));
  std::set<std::string> written;
  auto blob = [&](const std::string& digest) {
    if (!written.insert(digest).second) return;
    std::string path = content.blob_path(digest);
    if (!content.has(digest)) throw Error("blob " + digest + " is not in the store", ENOENT);
    out.file("blobs/sha256/" + digest.substr(7), file_size(path),
             [&](const Sink& sink) { copy_file(path, sink); });
  };
  json entries = json::array();
  for (auto& s : sel) {
    try {
      std::string mbody = content.read_blob(s.rec.manifest_digest);
      std::string mt = sniff_media_type(mbody, "");
      for (auto& l : s.rec.layers) {
        try {
          blob(l.digest);
        } catch (const Error& e) {
          throw e.with_context("layer " + l.digest);
        }
      }
      blob(s.rec.config_digest);
      blob(s.rec.manifest_digest);
      json d = {{"mediaType", mt}, {"digest", s.rec.manifest_digest}, {"size", mbody.size()}};
      try {
        Platform p = parse_platform(s.rec.platform);
        d["platform"] = {{"os", p.os}, {"architecture", p.architecture}};
        if (!p.variant.empty()) d["platform"]["variant"] = p.variant;
      } catch (const Error&) {
      }
      if (s.names.empty()) entries.push_back(d);
      for (auto& n : s.names) {
        json e = d;
        e["annotations"] = {{kRefNameAnnotation, n}, {kContainerdNameAnnotation, n}};
        entries.push_back(e);
      }
    } catch (const Error& e) {
      throw e.with_context("save " + (s.names.empty() ? s.rec.id : s.names[0]));
    }
  }
  json index = {{"schemaVersion", 2}, {"mediaType", media::oci_index}, {"manifests", entries}};
  out.file("index.json", index.dump());
}

void write_archive(const ContentStore& content, const ImageStore& images,
                   const std::vector<Selected>& sel, ArchiveFormat f, Output& out) {
  if (f == ArchiveFormat::docker_archive)
    write_docker(content, images, sel, out);
  else
    write_oci(content, sel, out);
}

bool empty_dir(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd) return false;
  DIR* d = ::fdopendir(fd.release());
  bool empty = true;
  while (auto* e = ::readdir(d))
    if (std::strcmp(e->d_name, ".") != 0 && std::strcmp(e->d_name, "..") != 0) empty = false;
  ::closedir(d);
  return empty;
}

}  // namespace

void save_images(const ContentStore& content, const ImageStore& images,
                 const std::vector<std::string>& refs, const SaveOptions& o) {
  if (refs.empty()) throw Error("save: no image given", EINVAL);
  auto sel = select_images(images, refs);
  bool to_stdout = o.output.empty() || o.output == "-";
  std::string tmp = o.output + ".racker-tmp-" + std::to_string(::getpid());

  if (o.format == ArchiveFormat::oci_dir) {
    if (to_stdout) throw Error("save: oci-dir needs an output directory (-o DIR)", EINVAL);
    if (path_exists(o.output) && !empty_dir(o.output))
      throw Error("save: " + o.output + " exists and is not an empty directory", EEXIST);
    remove_tree(tmp);
    mkdir_p(tmp, 0755);
    try {
      DirOutput out(tmp);
      write_archive(content, images, sel, o.format, out);
      if (path_exists(o.output) && ::rmdir(o.output.c_str()) != 0)
        throw_errno("replace " + o.output);
      if (::rename(tmp.c_str(), o.output.c_str()) != 0) throw_errno("rename to " + o.output);
    } catch (...) {
      remove_tree(tmp);
      throw;
    }
    return;
  }

  if (to_stdout) {
    TarOutput out(1);
    write_archive(content, images, sel, o.format, out);
    out.finish();
    return;
  }
  UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  if (!fd) throw_errno("save: create " + tmp);
  try {
    TarOutput out(fd.get());
    write_archive(content, images, sel, o.format, out);
    out.finish();
    if (::fsync(fd.get()) != 0) throw_errno("save: write " + tmp);
    if (::rename(tmp.c_str(), o.output.c_str()) != 0) throw_errno("save: rename to " + o.output);
  } catch (...) {
    ::unlink(tmp.c_str());
    throw;
  }
}

}  // namespace racker::image
