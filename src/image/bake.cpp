#include "image/bake.hpp"

#include <fcntl.h>
#include <isa-l/igzip_lib.h>
#include <spawn.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <set>

#include <nlohmann/json.hpp>

#include "base/error.hpp"
#include "base/fd.hpp"
#include "base/file_lock.hpp"
#include "base/fs.hpp"
#include "base/ids.hpp"
#include "base/log.hpp"
#include "base/strings.hpp"
#include "image/decompress.hpp"
#include "image/digest.hpp"
#include "image/http.hpp"
#include "image/importer.hpp"
#include "image/manifest.hpp"
#include "image/reference.hpp"
#include "image/tar.hpp"

extern char** environ;

namespace racker::image {

using nlohmann::json;
using Sink = std::function<void(const void*, size_t)>;

namespace {

constexpr size_t kChunk = 1 << 20;
constexpr const char* kPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
constexpr const char* kVariants[] = {"extract", "custom", "essential", "apt",         "required",
                                     "minbase", "buildd", "important", "debootstrap", "standard"};

bool all_of_chars(const std::string& s, const char* extra) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [&](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || std::strchr(extra, c);
  });
}

std::string rfc3339(time_t t) {
  struct tm tm;
  ::gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

// Gzip (ISA-L, level 1: layers are compressed once per bake and unpacked often, so speed
// matters more than the last few percent).
class GzipWriter {
 public:
  explicit GzipWriter(Sink out)
      : out_(std::move(out)), level_buf_(ISAL_DEF_LVL1_DEFAULT), buf_(kChunk) {
    isal_deflate_init(&st_);
    st_.level = 1;
    st_.level_buf = level_buf_.data();
    st_.level_buf_size = static_cast<uint32_t>(level_buf_.size());
    st_.gzip_flag = IGZIP_GZIP;
    st_.flush = NO_FLUSH;
  }
  void write(const void* p, size_t n) {
    auto* in = static_cast<const uint8_t*>(p);
    while (n > 0) {  // avail_in is 32-bit
      uint32_t part = static_cast<uint32_t>(std::min<size_t>(n, 1u << 30));
      st_.next_in = const_cast<uint8_t*>(in);
      st_.avail_in = part;
      st_.end_of_stream = 0;
      run();
      in += part;
      n -= part;
    }
  }
  void finish() {
    st_.next_in = nullptr;
    st_.avail_in = 0;
    st_.end_of_stream = 1;
    run();
    if (st_.internal_state.state != ZSTATE_END) throw Error("gzip: stream did not end", EIO);
  }

 private:
  void run() {
    do {
      st_.next_out = buf_.data();
      st_.avail_out = static_cast<uint32_t>(buf_.size());
      int r = isal_deflate(&st_);
      if (r != COMP_OK) throw Error("gzip: compression failed (" + std::to_string(r) + ")", EIO);
      size_t produced = buf_.size() - st_.avail_out;
      if (produced) out_(buf_.data(), produced);
    } while (st_.avail_in > 0 || st_.avail_out == 0 ||
             (st_.end_of_stream && st_.internal_state.state != ZSTATE_END));
  }

  Sink out_;
  isal_zstream st_{};
  std::vector<uint8_t> level_buf_;
  std::vector<uint8_t> buf_;
};

// Reads fd sequentially in big chunks, decompressed when it is gzip, zstd or xz.
class Reader {
 public:
  explicit Reader(int fd) : dec_(make_decompressor(fd, Compression::detect)), buf_(kChunk) {}
  // Exactly n bytes to sink (or dropped when sink is null); false at a clean EOF before any.
  bool take(uint64_t n, const Sink* sink) {
    bool any = false;
    while (n > 0) {
      if (pos_ == len_ && !fill()) {
        if (!any) return false;
        throw Error("truncated tar archive", EINVAL);
      }
      size_t k = static_cast<size_t>(std::min<uint64_t>(n, len_ - pos_));
      if (sink) (*sink)(buf_.data() + pos_, k);
      pos_ += k;
      n -= k;
      any = true;
    }
    return true;
  }

 private:
  bool fill() {
    pos_ = 0;
    len_ = dec_->read(buf_.data(), buf_.size());
    return len_ > 0;
  }
  std::unique_ptr<Decompressor> dec_;
  std::vector<uint8_t> buf_;
  size_t pos_ = 0, len_ = 0;
};

// Below ./dev: "./dev/null", "dev/pts/" (but not ./dev itself).
bool under_dev(std::string p) {
  while (p.starts_with("./") || p.starts_with("/")) p.erase(0, p.starts_with("/") ? 1 : 2);
  return p.starts_with("dev/") && p.find_first_not_of('/', 4) != std::string::npos;
}

// Copies a tar stream to out without the entries below ./dev (with their PAX and GNU long-name
// headers), ending it with the two-block end-of-archive marker. The blocks of the entries kept
// are copied as they are; the tar module's decoder says what they are.
void filter_rootfs_tar(int fd, const Sink& out) {
  using Kind = TarHeaderDecoder::Header::Kind;
  Reader in(fd);
  TarHeaderDecoder dec;
  std::string pending;  // meta headers (and their data) of the next entry
  uint8_t h[tar::kBlock];
  size_t h_len = 0;
  Sink to_h = [&](const void* p, size_t n) {
    std::memcpy(h + h_len, p, n);
    h_len += n;
  };
  Sink to_pending = [&](const void* p, size_t n) {
    pending.append(static_cast<const char*>(p), n);
  };
  TarEntry e;
  try {
    for (;;) {
      h_len = 0;
      if (!in.take(tar::kBlock, &to_h)) break;  // no end marker: end here
      if (tar::is_zero_block(h)) break;
      auto hd = dec.header(h);
      if (hd.kind == Kind::meta) {
        if (hd.size > hd.meta_max)
          throw Error(std::string(hd.what) + " of " + std::to_string(hd.size) + " bytes " +
                          dec.where() + " is too large",
                      EINVAL);
        size_t at = pending.size();
        pending.append(reinterpret_cast<const char*>(h), sizeof h);
        in.take(hd.size + tar::padding(hd.size), &to_pending);
        dec.meta(hd, std::string_view(pending).substr(at + sizeof h, hd.size));
        if (hd.type == 'g') {  // global: applies to every later entry, so always kept
          out(pending.data() + at, pending.size() - at);
          pending.resize(at);
        }
        continue;
      }
      if (hd.kind == Kind::skip) {  // a volume label: not a file, left out
        in.take(hd.size + tar::padding(hd.size), nullptr);
        continue;
      }
      uint64_t size = dec.entry(h, e);
      bool keep = !under_dev(e.path);
      if (keep) {
        out(pending.data(), pending.size());
        out(h, sizeof h);
      }
      in.take(size + tar::padding(size), keep ? &out : nullptr);
      pending.clear();
      dec.leave_entry();
    }
  } catch (const Error& err) {
    throw err.with_context("rootfs tarball");
  }
  out(std::string(2 * tar::kBlock, '\0').data(), 2 * tar::kBlock);
}

// Runs argv (stdin /dev/null, its output to our stderr: our stdout stays for results) and
// returns its exit status; with tail, the last 8 KiB of what it wrote are kept there too.
int run_command(const std::vector<std::string>& argv, std::string* tail = nullptr) {
  std::vector<char*> cargv;
  for (auto& a : argv) cargv.push_back(const_cast<char*>(a.c_str()));
  cargv.push_back(nullptr);
  int p[2] = {-1, -1};
  if (tail && ::pipe2(p, O_CLOEXEC) != 0) throw_errno("pipe");
  UniqueFd rd(p[0]), wr(p[1]);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  if (tail) {
    posix_spawn_file_actions_adddup2(&fa, wr.get(), 1);
    posix_spawn_file_actions_adddup2(&fa, wr.get(), 2);
  } else {
    posix_spawn_file_actions_adddup2(&fa, 2, 1);
  }
  pid_t pid;
  int rc = posix_spawnp(&pid, argv[0].c_str(), &fa, nullptr, cargv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0) throw_errno("run " + argv[0], rc);
  if (tail) {
    wr.reset();
    char buf[4096];
    for (;;) {
      ssize_t n = ::read(rd.get(), buf, sizeof buf);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      (void)!::write(2, buf, static_cast<size_t>(n));
      tail->append(buf, static_cast<size_t>(n));
      if (tail->size() > 8192) tail->erase(0, tail->size() - 8192);
    }
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0)
    if (errno != EINTR) throw_errno("wait for " + argv[0]);
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  return 128 + WTERMSIG(status);
}

bool on_path(const std::string& prog) {
  if (prog.find('/') != std::string::npos) return ::access(prog.c_str(), X_OK) == 0;
  return !find_in_path(prog).empty();
}

void status(const BakeOptions& o, const std::string& s) {
  if (o.on_status) o.on_status(s);
}

}  // namespace

const std::vector<BakeDistro>& bake_distros() {
  static const std::vector<BakeDistro> d = {{"debian", "bookworm"}, {"ubuntu", "noble"}};
  return d;
}

BakeOptions normalize_bake_options(const BakeOptions& in) {
  BakeOptions o = in;
  const BakeDistro* distro = nullptr;
  std::string names;
  for (auto& d : bake_distros()) {
    names += (names.empty() ? "" : ", ") + std::string(d.name);
    if (o.distro == d.name) distro = &d;
  }
  if (!distro)
    throw Error("bake " + o.distro + ": not supported yet (supported: " + names + ")", ENOTSUP);
  if (o.suite.empty()) o.suite = distro->default_suite;
  if (!all_of_chars(o.suite, ".-"))
    throw Error("bake " + o.distro + ": invalid suite \"" + o.suite + "\"", EINVAL);
  if (std::find_if(std::begin(kVariants), std::end(kVariants),
                   [&](const char* v) { return o.variant == v; }) == std::end(kVariants))
    throw Error("bake " + o.distro + ": unknown variant \"" + o.variant +
                    "\" (mmdebstrap knows extract, custom, essential, apt, required, minbase, "
                    "buildd, important, debootstrap, standard)",
                EINVAL);
  std::set<std::string> pkgs;
  for (auto& p : o.include) {
    if (p.empty()) continue;
    if (!all_of_chars(p, ".+-") || !std::isalnum(static_cast<unsigned char>(p[0])))
      throw Error("bake " + o.distro + ": invalid package name \"" + p + "\"", EINVAL);
    pkgs.insert(p);
  }
  o.include.assign(pkgs.begin(), pkgs.end());
  if (!o.mirror.empty() && (o.mirror.find("://") == std::string::npos ||
                            o.mirror.find_first_of(" \t\n") != std::string::npos))
    throw Error("bake " + o.distro + ": invalid mirror \"" + o.mirror + "\" (want a URL)", EINVAL);
  if (o.arch.empty()) o.arch = debian_arch_of(host_platform());
  if (o.arch.empty())
    throw Error("bake: this machine's architecture (" + host_platform().architecture +
                    ") has no Debian name: use --arch",
                EINVAL);
  try {
    platform_of_debian_arch(o.arch);
  } catch (const Error& e) {
    throw e.with_context("bake " + o.distro);
  }
  if (o.name.empty()) o.name = o.distro + ":" + o.suite;
  Reference ref = parse_reference(o.name);
  if (!ref.digest.empty()) throw Error("bake: cannot name an image by digest: " + o.name, EINVAL);
  o.name = ref.str();
  return o;
}

std::string bake_cache_key(const BakeOptions& o, const std::string& arch) {
  json k = {{"distro", o.distro},   {"suite", o.suite},   {"variant", o.variant},
            {"include", o.include}, {"mirror", o.mirror}, {"arch", arch}};
  return digest_hex(sha256_digest(k.dump())).substr(0, 32);
}

std::vector<std::string> mmdebstrap_argv(const BakeOptions& o, const std::string& out) {
  std::vector<std::string> argv = {o.mmdebstrap, "--variant=" + o.variant, "--format=tar"};
  if (o.quiet) argv.push_back("--quiet");
  if (!o.arch.empty() && o.arch != debian_arch_of(host_platform()))
    argv.push_back("--architectures=" + o.arch);
  if (!o.include.empty()) {
    std::string inc;
    for (auto& p : o.include) inc += (inc.empty() ? "" : ",") + p;
    argv.push_back("--include=" + inc);
  }
  if (o.distro == "ubuntu") {
    argv.push_back("--components=main,universe");
    argv.push_back(std::string("--keyring=") + kUbuntuKeyring);
  }
  argv.push_back(o.suite);
  argv.push_back(out);
  if (!o.mirror.empty()) argv.push_back(o.mirror);  // else mmdebstrap's: + updates, security
  return argv;
}

LayerBlob store_layer(ContentStore& content, const std::string& tmp_dir,
                      const std::function<void(const Sink&)>& produce) {
  UniqueFd tmp = anonymous_file(tmp_dir);
  Sha256 diff, blob;
  LayerBlob out;
  GzipWriter gz([&](const void* p, size_t n) {
    blob.update(p, n);
    out.size += n;
    if (!write_all(tmp.get(), p, n)) throw_errno("write layer in " + tmp_dir);
  });
  produce([&](const void* p, size_t n) {
    diff.update(p, n);
    gz.write(p, n);
  });
  gz.finish();
  out.diff_id = diff.digest();
  out.digest = blob.digest();
  auto ingest = content.begin_ingest(out.digest, static_cast<int64_t>(out.size));
  if (!ingest) return out;
  ingest->reset();
  std::vector<char> buf(kChunk);
  for (uint64_t off = 0; off < out.size;) {
    ssize_t n = ::pread(tmp.get(), buf.data(), buf.size(), static_cast<off_t>(off));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) throw_errno("read layer in " + tmp_dir, n == 0 ? EIO : errno);
    ingest->write(buf.data(), static_cast<size_t>(n));
    off += static_cast<uint64_t>(n);
  }
  ingest->commit();
  return out;
}

LayerBlob rootfs_tar_to_layer(int in_fd, ContentStore& content, const std::string& tmp_dir) {
  return store_layer(content, tmp_dir, [&](const Sink& sink) { filter_rootfs_tar(in_fd, sink); });
}

LayerBlob tree_to_layer(const std::string& dir, ContentStore& content, const std::string& tmp_dir) {
  return store_layer(content, tmp_dir, [&](const Sink& sink) {
    TarWriter w(sink);
    write_tree(w, dir, {.skip = under_dev});
    w.finish();
  });
}

static std::string archive_of(const BakeOptions& o) {
  std::string mirror = !o.mirror.empty()      ? o.mirror
                       : o.distro == "ubuntu" ? "http://archive.ubuntu.com/ubuntu"
                                              : "http://deb.debian.org/debian";
  while (!mirror.empty() && mirror.back() == '/') mirror.pop_back();
  return mirror;
}

// Whether the suite's InRelease is past its Valid-Until (a mirror no longer refreshed).
static bool release_expired(const BakeOptions& o) {
  std::string url = archive_of(o) + "/dists/" + o.suite + "/InRelease";
  try {
    http::Session session;
    session.options.connect_timeout = std::chrono::seconds(10);
    http::Request q;
    q.url = url;
    std::string body;
    q.sink = [&](const http::Response&, const char* p, size_t n) {
      body.append(p, n);
      return body.size() < (1u << 20) && body.find("\nValid-Until:") == std::string::npos;
    };
    session.perform(q, url);
    auto at = body.find("\nValid-Until:");
    if (at == std::string::npos) return false;
    auto end = body.find('\n', at + 1);
    if (end == std::string::npos) return false;  // (cut off mid-line)
    std::string when = trim(body.substr(at + 14, end - at - 14));
    struct tm tm = {};
    if (!::strptime(when.c_str(), "%a, %d %b %Y %H:%M:%S", &tm)) return false;
    return ::timegm(&tm) < ::time(nullptr);
  } catch (const Error&) {
    return false;
  }
}

// After mmdebstrap failed: whether the archive answers for the suite at all, in words (": the
// archive URL is unreachable: ..."); "" when it does (the failure was something else).
static std::string archive_diagnosis(const BakeOptions& o) {
  std::string mirror = archive_of(o);
  std::string url = mirror + "/dists/" + o.suite + "/Release";
  try {
    http::Session session;
    session.options.connect_timeout = std::chrono::seconds(10);
    session.options.stall_timeout = std::chrono::seconds(10);
    http::Request q;
    q.method = "HEAD";
    q.url = url;
    auto r = session.perform(q, url);
    if (r.failure) return ": the archive " + mirror + " is unreachable: " + r.failure->message;
    if (r.status == 404)
      return ": the archive " + mirror + " has no suite " + o.suite + " (HTTP 404 for " + url + ")";
    if (r.status >= 400)
      return ": the archive " + mirror + " answers HTTP " + std::to_string(r.status) + " for " +
             url;
  } catch (const Error&) {
  }
  return "";
}

ImageRecord import_rootfs_tarball(ContentStore& content, ImageStore& images,
                                  const std::string& tarball, const RootfsImage& what,
                                  const std::function<void(const std::string&)>& on_status) {
  auto status = [&](const std::string& s) {
    if (on_status) on_status(s);
  };
  UniqueFd tar(::open(tarball.c_str(), O_RDONLY | O_CLOEXEC));
  if (!tar) throw_errno("open " + tarball);
  struct stat st;
  if (::fstat(tar.get(), &st) != 0) throw_errno("stat " + tarball);
  status("compressing layer");
  LayerBlob layer = rootfs_tar_to_layer(tar.get(), content, content.root() + "/ingest");

  // created: when the rootfs was made, so importing the same tarball gives the same image id
  std::string created = rfc3339(st.st_mtim.tv_sec);
  const Platform& pf = what.platform;
  json cfg = {{"architecture", pf.architecture},
              {"os", pf.os},
              {"created", created},
              {"config", {{"Env", {kPath}}, {"Cmd", {"/bin/bash"}}}},
              {"rootfs", {{"type", "layers"}, {"diff_ids", {layer.diff_id}}}},
              {"history", {{{"created", created}, {"created_by", what.created_by}}}}};
  if (!pf.variant.empty()) cfg["variant"] = pf.variant;
  std::string cfg_body = cfg.dump();
  std::string cfg_digest = content.put_blob(cfg_body);
  json manifest = {
      {"schemaVersion", 2},
      {"mediaType", media::oci_manifest},
      {"config",
       {{"mediaType", media::oci_config}, {"digest", cfg_digest}, {"size", cfg_body.size()}}},
      {"layers",
       {{{"mediaType", "application/vnd.oci.image.layer.v1.tar+gzip"},
         {"digest", layer.digest},
         {"size", layer.size}}}}};
  status("unpacking layer");
  return import_images(content, images, {{manifest.dump(), "", {what.name}, nullptr}}, pf)
      .at(0)
      .record;
}

BakeResult bake_image(ContentStore& content, ImageStore& images, const BakeOptions& in) {
  BakeOptions o = normalize_bake_options(in);
  std::string what = "bake " + o.distro + " " + o.suite;
  try {
    if (o.distro == "ubuntu" && !path_exists(kUbuntuKeyring))
      throw Error(std::string("the Ubuntu archive keyring ") + kUbuntuKeyring +
                      " is missing: install ubuntu-keyring (Debian bookworm's archive does not "
                      "have it, so Ubuntu images cannot be baked on such a host yet)",
                  ENOENT);
    Platform host = host_platform();
    std::string cache = o.cache_dir.empty() ? content.root() + "/bake-cache" : o.cache_dir;
    mkdir_p(cache, 0700);
    std::string key = bake_cache_key(o, o.arch);
    BakeResult res;
    res.name = o.name;
    res.rootfs_tar = cache + "/" + key + ".tar";
    {
      FileLock lock(cache + "/" + key + ".lock", FileLock::File::transient);  // one build per key
      if (path_exists(res.rootfs_tar)) {
        res.from_cache = true;
        status(o, "using cached rootfs " + res.rootfs_tar);
      } else {
        if (!on_path(o.mmdebstrap))
          throw Error(o.mmdebstrap + " not found (apt-get install mmdebstrap)", ENOENT);
        if (o.arch != debian_arch_of(host) && !on_path("arch-test"))
          throw Error(
              "mmdebstrap needs arch-test to build " + o.arch + " here (apt-get install arch-test)",
              ENOENT);
        std::string partial = res.rootfs_tar + ".partial";
        auto argv = mmdebstrap_argv(o, partial);
        std::string cmd;
        for (auto& a : argv) cmd += (cmd.empty() ? "" : " ") + a;
        status(o, "building rootfs: " + cmd);
        ::unlink(partial.c_str());
        std::string output;
        int rc = run_command(argv, &output);
        if (rc != 0 &&
            (output.find("is expired") != std::string::npos ||
             (output.find("apt-get update") != std::string::npos && release_expired(o)))) {
          // a mirror that is not refreshed any more (a snapshot): its Release files are past
          // Valid-Until. Signatures are still checked; only their age is let go, as
          // mmdebstrap's manual says to do for snapshots.
          log::warn("bake " + o.distro + " " + o.suite +
                    ": the archive's Release file has expired (a stale mirror?): baking from "
                    "it anyway, its signatures still checked");
          argv.insert(argv.begin() + 1, "--aptopt=Acquire::Check-Valid-Until \"false\"");
          ::unlink(partial.c_str());
          output.clear();
          rc = run_command(argv, &output);
        }
        if (rc != 0) {
          ::unlink(partial.c_str());
          throw Error(
              "mmdebstrap failed (exit status " + std::to_string(rc) + ")" + archive_diagnosis(o),
              EIO);
        }
        // record what the tarball is, for people looking into the cache
        json meta = {{"distro", o.distro},   {"suite", o.suite},   {"variant", o.variant},
                     {"include", o.include}, {"mirror", o.mirror}, {"arch", o.arch}};
        write_file_atomic(cache + "/" + key + ".json", meta.dump(1) + "\n", 0644);
        if (::rename(partial.c_str(), res.rootfs_tar.c_str()) != 0)
          throw_errno("rename " + partial);
      }
    }

    std::string created_by = "racker bake --suite " + o.suite + " --variant " + o.variant;
    if (!o.include.empty()) {
      std::string inc;
      for (auto& p : o.include) inc += (inc.empty() ? "" : ",") + p;
      created_by += " --include " + inc;
    }
    if (!o.mirror.empty()) created_by += " --mirror " + o.mirror;
    if (o.arch != debian_arch_of(host)) created_by += " --arch " + o.arch;
    created_by += " " + o.distro;
    res.record = import_rootfs_tarball(content, images, res.rootfs_tar,
                                       {o.name, created_by, platform_of_debian_arch(o.arch)},
                                       [&](const std::string& s) { status(o, s); });
    return res;
  } catch (const Error& e) {
    throw e.with_context(what);
  }
}

}  // namespace racker::image
