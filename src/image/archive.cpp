// Reading image archives (docker-archive, OCI layout directory, OCI archive) and `load`.
#include "image/archive.hpp"

#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <optional>

#include <nlohmann/json.hpp>

#include "base/error.hpp"
#include "base/fd.hpp"
#include "base/fs.hpp"
#include "image/decompress.hpp"
#include "image/digest.hpp"
#include "image/reference.hpp"
#include "image/tar.hpp"

namespace racker::image {

using nlohmann::json;
using Sink = std::function<void(const void*, size_t)>;

namespace {

constexpr uint64_t kJsonLimit = 64 << 20;  // manifest.json, index.json, configs, manifests
constexpr size_t kChunk = 1 << 20;

[[noreturn]] void bad(const std::string& msg) {
  throw Error(msg, EINVAL);
}

// "./a//b/../c" -> "a/c"; never climbs above the archive's root.
std::string member_path(std::string_view p) {
  std::string abs = "/";
  abs.append(p);
  std::string c = clean_path(abs);
  return c == "/" ? "" : c.substr(1);
}

std::string dirname_of(const std::string& p) {
  auto slash = p.rfind('/');
  return slash == std::string::npos ? "" : p.substr(0, slash);
}

void pread_all(int fd, void* buf, size_t n, uint64_t off, const std::string& what) {
  auto* p = static_cast<char*>(buf);
  while (n > 0) {
    ssize_t r = ::pread(fd, p, n, static_cast<off_t>(off));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) throw_errno("read " + what);
    if (r == 0) throw Error("read " + what + ": unexpected end of file", EIO);
    p += r;
    off += static_cast<uint64_t>(r);
    n -= static_cast<size_t>(r);
  }
}

bool is_gzip(const uint8_t* b, size_t n) {
  return n >= 2 && b[0] == 0x1f && b[1] == 0x8b;
}
bool is_zstd(const uint8_t* b, size_t n) {
  return n >= 4 && b[0] == 0x28 && b[1] == 0xb5 && b[2] == 0x2f && b[3] == 0xfd;
}

}  // namespace

// --- member trees ----------------------------------------------------------------------------

class ArchiveFiles {
 public:
  virtual ~ArchiveFiles() = default;
  // Size of the regular file at path (links within the archive followed); nullopt if absent.
  virtual std::optional<uint64_t> size(const std::string& path) const = 0;
  // Streams the file's first `max` bytes (all of it by default) to sink.
  virtual void read(const std::string& path, const Sink& sink, uint64_t max = UINT64_MAX) const = 0;

  std::string read_all(const std::string& path, uint64_t limit) const {
    auto n = size(path);
    if (!n) throw Error(path + " is missing from the archive", ENOENT);
    if (*n > limit)
      bad(path + " is too large (" + std::to_string(*n) + " bytes, at most " +
          std::to_string(limit) + ")");
    std::string out;
    out.reserve(*n);
    read(path, [&](const void* p, size_t k) { out.append(static_cast<const char*>(p), k); });
    return out;
  }
  std::string head(const std::string& path, size_t n) const {
    std::string out;
    read(
        path, [&](const void* p, size_t k) { out.append(static_cast<const char*>(p), k); }, n);
    return out;
  }
};

namespace {

// A tar file indexed once: member path -> where its data lies. Later members of the same
// path win, as when the archive is extracted.
class TarFiles : public ArchiveFiles {
 public:
  explicit TarFiles(UniqueFd fd) : fd_(std::move(fd)) { index(); }

  std::optional<uint64_t> size(const std::string& path) const override {
    const Member* m = resolve(path);
    if (!m) return std::nullopt;
    return m->size;
  }

  void read(const std::string& path, const Sink& sink, uint64_t max) const override {
    const Member* m = resolve(path);
    if (!m) throw Error(path + " is missing from the archive", ENOENT);
    std::string buf(static_cast<size_t>(std::min<uint64_t>(kChunk, std::max<uint64_t>(m->size, 1))),
                    '\0');
    uint64_t left = std::min(m->size, max), off = m->offset;
    while (left > 0) {
      size_t n = static_cast<size_t>(std::min<uint64_t>(left, buf.size()));
      pread_all(fd_.get(), buf.data(), n, off, path);
      sink(buf.data(), n);
      off += n;
      left -= n;
    }
  }

 private:
  struct Member {
    char type = '0';  // '0' file, '1' hardlink, '2' symlink
    uint64_t offset = 0;
    uint64_t size = 0;
    std::string link;
  };

  // Decodes the headers with the tar module's decoder, reading them with pread: the data of
  // members is not read here, only where it lies.
  void index() {
    struct stat st;
    if (::fstat(fd_.get(), &st) != 0) throw_errno("stat archive");
    const uint64_t total = static_cast<uint64_t>(st.st_size);
    if (total == 0) bad("not a tar archive (empty file)");
    if (total < tar::kBlock) bad("not a tar archive (too short)");
    TarHeaderDecoder dec;
    using Kind = TarHeaderDecoder::Header::Kind;
    uint64_t pos = 0;
    uint8_t b[tar::kBlock];
    TarEntry e;
    while (pos + tar::kBlock <= total) {
      pread_all(fd_.get(), b, sizeof b, pos, "tar header");
      if (tar::is_zero_block(b)) return;
      if (!tar::checksum_ok(b)) {
        if (pos == 0) bad("not a tar archive");
        bad("corrupt tar header at offset " + std::to_string(pos));
      }
      const uint64_t data = pos + tar::kBlock;
      auto decoded = [&](auto&& step) {
        try {
          return step();
        } catch (const Error& err) {
          throw err.with_context("corrupt tar header at offset " + std::to_string(pos));
        }
      };
      auto h = decoded([&] { return dec.header(b); });
      if (h.kind != Kind::entry) {
        if (h.kind == Kind::meta && h.size > h.meta_max)
          bad("tar meta header too large at offset " + std::to_string(pos));
        if (data + h.size > total)
          bad("truncated tar archive (header at offset " + std::to_string(pos) + ")");
        if (h.kind == Kind::meta) {
          std::string meta(h.size, '\0');
          pread_all(fd_.get(), meta.data(), h.size, data, "tar header");
          decoded([&] { dec.meta(h, meta); });
        }
        pos = data + h.size + tar::padding(h.size);
        continue;
      }
      uint64_t size = decoded([&] { return dec.entry(b, e); });
      std::string key = member_path(e.path);
      if (data + size > total)
        bad("truncated tar archive (" + key + " needs " + std::to_string(size) + " bytes)");
      if (e.type == TarEntry::Type::file)
        members_[key] = {'0', data, size, ""};
      else if (e.type == TarEntry::Type::hardlink)
        members_[key] = {'1', 0, 0, member_path(e.linkpath)};
      else if (e.type == TarEntry::Type::symlink)
        members_[key] = {'2', 0, 0, e.linkpath};
      else
        members_.erase(key);  // a directory or special file: nothing to read
      pos = data + size + tar::padding(size);
    }
  }

  // Follows hardlinks and symlinks (relative to the link's directory), at most 16 of them.
  const Member* resolve(const std::string& path) const {
    std::string p = member_path(path);
    for (int hops = 0; hops < 16; ++hops) {
      auto it = members_.find(p);
      if (it == members_.end()) return nullptr;
      const Member& m = it->second;
      if (m.type == '0') return &m;
      if (m.type == '1')
        p = m.link;
      else
        p = member_path(m.link.starts_with("/") ? m.link : dirname_of(p) + "/" + m.link);
    }
    return nullptr;
  }

  UniqueFd fd_;
  std::map<std::string, Member> members_;
};

// A directory (an OCI image layout): every open is contained in it by the kernel.
class DirFiles : public ArchiveFiles {
 public:
  explicit DirFiles(const std::string& dir) : dir_(dir) {
    root_.reset(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!root_) throw_errno("open " + dir);
  }

  std::optional<uint64_t> size(const std::string& path) const override {
    UniqueFd fd = open(path);
    if (!fd) return std::nullopt;
    struct stat st;
    if (::fstat(fd.get(), &st) != 0) throw_errno("stat " + path);
    if (!S_ISREG(st.st_mode)) return std::nullopt;
    return static_cast<uint64_t>(st.st_size);
  }

  void read(const std::string& path, const Sink& sink, uint64_t max) const override {
    UniqueFd fd = open(path);
    if (!fd) throw Error(path + " is missing from the archive", ENOENT);
    std::string buf(kChunk, '\0');
    uint64_t left = max;
    while (left > 0) {
      ssize_t n =
          ::read(fd.get(), buf.data(), static_cast<size_t>(std::min<uint64_t>(left, kChunk)));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) throw_errno("read " + path);
      if (n == 0) break;
      sink(buf.data(), static_cast<size_t>(n));
      left -= static_cast<uint64_t>(n);
    }
  }

 private:
  UniqueFd open(const std::string& path) const {
    open_how how{};
    how.flags = O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK;
    how.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS;
    std::string p = member_path(path);
    for (;;) {
      long fd = ::syscall(SYS_openat2, root_.get(), p.empty() ? "." : p.c_str(), &how, sizeof how);
      if (fd >= 0) return UniqueFd(static_cast<int>(fd));
      if (errno == EINTR || errno == EAGAIN) continue;
      if (errno == ENOENT || errno == ENOTDIR) return UniqueFd();
      throw_errno("open " + dir_ + "/" + p);
    }
  }

  std::string dir_;
  UniqueFd root_;
};

// The whole stream, decompressed if it is gzip or zstd, in an unnamed file.
UniqueFd spool(int fd, const std::string& spool_dir) {
  UniqueFd out = anonymous_file(spool_dir);
  auto dec = make_decompressor(fd, Compression::detect);
  std::string buf(kChunk, '\0');
  for (;;) {
    size_t n = dec->read(reinterpret_cast<uint8_t*>(buf.data()), buf.size());
    if (n == 0) break;
    if (!write_all(out.get(), buf.data(), n)) throw_errno("write spool file in " + spool_dir);
  }
  return out;
}

std::string blob_member(const std::string& digest) {
  validate_digest(digest);
  auto colon = digest.find(':');
  return "blobs/" + digest.substr(0, colon) + "/" + digest.substr(colon + 1);
}

std::string canonical(const std::string& name, const std::string& what) {
  try {
    return parse_reference(name).str();
  } catch (const Error& e) {
    throw e.with_context(what);
  }
}

// The image's name from an OCI index entry: containerd's full name, else ref.name when it is
// a reference (contains '/', ':' or '@'); a bare ref.name is a tag without a repository.
std::optional<std::string> name_of(const json& entry, const std::string& what) {
  if (!entry.contains("annotations") || !entry["annotations"].is_object()) return std::nullopt;
  const json& a = entry["annotations"];
  for (const char* key : {kContainerdNameAnnotation, kRefNameAnnotation}) {
    if (!a.contains(key) || !a[key].is_string()) continue;
    std::string v = a[key];
    if (key == kRefNameAnnotation && v.find_first_of("/:@") == std::string::npos) continue;
    return canonical(v, what + ": annotation " + key);
  }
  return std::nullopt;
}

}  // namespace

// --- formats ---------------------------------------------------------------------------------

std::string archive_format_name(ArchiveFormat f) {
  switch (f) {
    case ArchiveFormat::docker_archive:
      return "docker-archive";
    case ArchiveFormat::oci_archive:
      return "oci-archive";
    case ArchiveFormat::oci_dir:
      return "oci-dir";
  }
  return "?";
}

ArchiveFormat parse_archive_format(const std::string& s) {
  if (s == "docker-archive" || s == "docker") return ArchiveFormat::docker_archive;
  if (s == "oci-archive") return ArchiveFormat::oci_archive;
  if (s == "oci-dir" || s == "oci") return ArchiveFormat::oci_dir;
  throw Error("unknown archive format \"" + s + "\" (use docker-archive, oci-archive or oci-dir)",
              EINVAL);
}

// --- ImageArchive ----------------------------------------------------------------------------

ImageArchive::ImageArchive(std::unique_ptr<ArchiveFiles> files, bool is_dir, const Options& o)
    : files_(std::move(files)), opts_(o) {
  if (files_->size("manifest.json")) {
    format_ = ArchiveFormat::docker_archive;
    parse_docker();
  } else if (files_->size("index.json")) {
    format_ = is_dir ? ArchiveFormat::oci_dir : ArchiveFormat::oci_archive;
    parse_oci();
  } else {
    throw Error(std::string("no manifest.json or index.json: not a docker-archive or OCI ") +
                    (is_dir ? "image layout" : "archive"),
                EINVAL);
  }
  for (auto& img : images_)
    for (auto& [digest, path] : img.blob_paths) all_blobs_.emplace(digest, path);
}

ImageArchive::~ImageArchive() = default;

std::unique_ptr<ImageArchive> ImageArchive::open(const std::string& path, const Options& o) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) throw_errno("open " + path);
  if (S_ISDIR(st.st_mode))
    return std::unique_ptr<ImageArchive>(
        new ImageArchive(std::make_unique<DirFiles>(path), true, o));
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) throw_errno("open " + path);
  uint8_t magic[4] = {};
  ssize_t n = ::pread(fd.get(), magic, sizeof magic, 0);
  if (n < 0) throw_errno("read " + path);
  if (!S_ISREG(st.st_mode) || is_gzip(magic, static_cast<size_t>(n)) ||
      is_zstd(magic, static_cast<size_t>(n)))
    fd = spool(fd.get(), o.spool_dir);
  return std::unique_ptr<ImageArchive>(
      new ImageArchive(std::make_unique<TarFiles>(std::move(fd)), false, o));
}

std::unique_ptr<ImageArchive> ImageArchive::open_stream(int fd, const Options& o) {
  struct stat st;
  if (::fstat(fd, &st) == 0 && S_ISREG(st.st_mode))
    return open("/proc/self/fd/" + std::to_string(fd), o);
  UniqueFd spooled = spool(fd, o.spool_dir);
  return std::unique_ptr<ImageArchive>(
      new ImageArchive(std::make_unique<TarFiles>(std::move(spooled)), false, o));
}

const std::string& ImageArchive::path_of(const std::string& digest) const {
  auto it = all_blobs_.find(digest);
  if (it == all_blobs_.end()) throw Error("blob " + digest + " is not in the archive", ENOENT);
  return it->second;
}

void ImageArchive::read(const Descriptor& d, const Sink& sink) const {
  files_->read(path_of(d.digest), sink);
}

std::string ImageArchive::where(const Descriptor& d) const {
  auto it = all_blobs_.find(d.digest);
  return it == all_blobs_.end() ? d.digest : it->second;
}

void ImageArchive::parse_docker() {
  json list;
  try {
    list = json::parse(files_->read_all("manifest.json", kJsonLimit));
  } catch (const json::exception&) {
    bad("manifest.json: not valid JSON");
  }
  if (!list.is_array()) bad("manifest.json: not a list of images");
  if (list.empty()) bad("manifest.json: lists no images");
  for (size_t i = 0; i < list.size(); ++i) {
    const json& e = list[i];
    std::string what = "manifest.json: image " + std::to_string(i + 1);
    if (!e.is_object()) bad(what + ": not an object");
    if (!e.contains("Config") || !e["Config"].is_string()) bad(what + ": no Config");
    if (!e.contains("Layers") || !e["Layers"].is_array()) bad(what + ": no Layers");
    ArchivedImage img;
    if (e.contains("RepoTags") && !e["RepoTags"].is_null()) {
      if (!e["RepoTags"].is_array()) bad(what + ": RepoTags is not a list");
      for (auto& t : e["RepoTags"]) {
        if (!t.is_string()) bad(what + ": RepoTags holds a non-string");
        img.names.push_back(canonical(t.get<std::string>(), what + ": RepoTags"));
      }
    }

    std::string cfg_path = member_path(e["Config"].get<std::string>());
    auto cfg_size = files_->size(cfg_path);
    if (!cfg_size) bad(what + ": config " + cfg_path + " is missing from the archive");
    std::string cfg_body = files_->read_all(cfg_path, kJsonLimit);
    ImageConfig cfg;
    try {
      cfg = parse_image_config(cfg_body);
    } catch (const Error& err) {
      throw err.with_context(what + ": config " + cfg_path);
    }
    std::string cfg_digest = sha256_digest(cfg_body);
    img.blob_paths[cfg_digest] = cfg_path;

    const json& layers = e["Layers"];
    if (layers.size() != cfg.diff_ids.size())
      bad(what + ": " + std::to_string(layers.size()) + " layers but config " + cfg_path +
          " lists " + std::to_string(cfg.diff_ids.size()) + " diff_ids");
    json mlayers = json::array();
    for (size_t k = 0; k < layers.size(); ++k) {
      if (!layers[k].is_string()) bad(what + ": Layers holds a non-string");
      std::string path = member_path(layers[k].get<std::string>());
      auto size = files_->size(path);
      if (!size) bad(what + ": layer " + path + " is missing from the archive");
      std::string magic = files_->head(path, 4);
      auto* m = reinterpret_cast<const uint8_t*>(magic.data());
      std::string media_type = "application/vnd.docker.image.rootfs.diff.tar";
      std::string digest = cfg.diff_ids[k];  // an uncompressed layer is its own diff
      if (is_gzip(m, magic.size()) || is_zstd(m, magic.size())) {
        media_type = is_gzip(m, magic.size()) ? "application/vnd.docker.image.rootfs.diff.tar.gzip"
                                              : "application/vnd.oci.image.layer.v1.tar+zstd";
        if (path.starts_with("blobs/sha256/") && path.size() == 13 + 64) {
          digest = "sha256:" + path.substr(13);
          validate_digest(digest);
        } else {
          Sha256 h;
          files_->read(path, [&](const void* p, size_t n) { h.update(p, n); });
          digest = h.digest();
        }
      }
      img.blob_paths.emplace(digest, path);
      mlayers.push_back({{"mediaType", media_type}, {"size", *size}, {"digest", digest}});
    }
    json manifest = {
        {"schemaVersion", 2},
        {"mediaType", media::docker_manifest},
        {"config",
         {{"mediaType", media::docker_config}, {"size", cfg_body.size()}, {"digest", cfg_digest}}},
        {"layers", mlayers}};
    img.manifest = manifest.dump();
    img.manifest_digest = sha256_digest(img.manifest);
    images_.push_back(std::move(img));
  }
}

void ImageArchive::parse_oci() {
  if (files_->size("oci-layout")) {
    json layout;
    try {
      layout = json::parse(files_->read_all("oci-layout", kJsonLimit));
    } catch (const json::exception&) {
      bad("oci-layout: not valid JSON");
    }
    if (!layout.is_object() || !layout.contains("imageLayoutVersion") ||
        !layout["imageLayoutVersion"].is_string())
      bad("oci-layout: no imageLayoutVersion");
    std::string v = layout["imageLayoutVersion"];
    if (!v.starts_with("1.")) bad("oci-layout: unsupported imageLayoutVersion \"" + v + "\"");
  }
  std::string body = files_->read_all("index.json", kJsonLimit);
  Index top = parse_index(body, "index.json");
  json raw = json::parse(body);  // valid: parse_index accepted it
  if (top.manifests.empty()) bad("index.json: lists no images");
  Platform want = opts_.platform.empty() ? host_platform() : parse_platform(opts_.platform);

  // A small blob (manifest, index, config) read whole and checked against its descriptor.
  auto small_blob = [&](const Descriptor& d, const std::string& what) {
    std::string path = blob_member(d.digest);
    auto size = files_->size(path);
    if (!size) bad(what + ": blob " + d.digest + " is missing from the archive");
    if (*size != static_cast<uint64_t>(d.size))
      bad(what + ": blob " + d.digest + " has " + std::to_string(*size) + " bytes, " +
          std::to_string(d.size) + " expected");
    std::string data = files_->read_all(path, kJsonLimit);
    std::string got = sha256_digest(data);
    if (got != d.digest) bad(what + ": blob " + path + " has digest " + got);
    return data;
  };

  for (size_t i = 0; i < top.manifests.size(); ++i) {
    std::string what = "index.json: manifests[" + std::to_string(i) + "]";
    std::optional<std::string> name = name_of(raw["manifests"][i], what);
    Descriptor d = top.manifests[i];
    std::string mbody = small_blob(d, what);
    // a multi-platform image: one level of index, platform chosen like pull does
    for (int depth = 0; is_index_media_type(sniff_media_type(mbody, d.media_type)); ++depth) {
      if (depth == 4) bad(what + ": image indexes nested too deeply");
      Index idx = parse_index(mbody, what + ": index " + d.digest);
      d = select_platform(idx, want, what);
      mbody = small_blob(d, what);
    }
    std::string mt = sniff_media_type(mbody, d.media_type);
    if (mt != media::oci_manifest && mt != media::docker_manifest)
      bad(what + ": unsupported media type \"" + mt + "\"");
    Manifest m = parse_manifest(mbody, what + ": manifest " + d.digest);

    auto existing = std::find_if(images_.begin(), images_.end(),
                                 [&](auto& img) { return img.manifest_digest == d.digest; });
    if (existing != images_.end()) {
      if (name &&
          std::find(existing->names.begin(), existing->names.end(), *name) == existing->names.end())
        existing->names.push_back(*name);
      continue;
    }
    ArchivedImage img;
    img.manifest = mbody;
    img.manifest_digest = d.digest;
    if (name) img.names.push_back(*name);
    std::vector<Descriptor> blobs = m.layers;
    blobs.insert(blobs.begin(), m.config);
    for (auto& b : blobs) {
      std::string path = blob_member(b.digest);
      auto size = files_->size(path);
      if (!size) bad(what + ": blob " + b.digest + " is missing from the archive");
      if (*size != static_cast<uint64_t>(b.size))
        bad(what + ": blob " + b.digest + " has " + std::to_string(*size) + " bytes, " +
            std::to_string(b.size) + " expected");
      img.blob_paths[b.digest] = path;
    }
    images_.push_back(std::move(img));
  }
}

// --- load ------------------------------------------------------------------------------------

std::vector<ImportResult> load_archive(ContentStore& content, ImageStore& images,
                                       const std::string& path, const ImageArchive::Options& o) {
  bool from_stdin = path.empty() || path == "-";
  try {
    auto archive = from_stdin ? ImageArchive::open_stream(0, o) : ImageArchive::open(path, o);
    std::vector<ImportItem> items;
    for (auto& img : archive->images())
      items.push_back({img.manifest, img.manifest_digest, img.names, archive.get()});
    Platform fallback = o.platform.empty() ? host_platform() : parse_platform(o.platform);
    return import_images(content, images, items, fallback);
  } catch (const Error& e) {
    throw e.with_context("load " + (from_stdin ? std::string("stdin") : path));
  }
}

}  // namespace racker::image
