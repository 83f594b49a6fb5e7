// Writing tar: TarWriter and write_tree (a directory as a layer).
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>
#include <map>
#include <utility>
#include <vector>

#include "base/error.hpp"
#include "base/fd.hpp"
#include "image/tar.hpp"

namespace racker::image {

using Sink = TarWriter::Sink;
using tar::kBlock;

namespace {

constexpr const char* kCapability = "security.capability";
constexpr size_t kChunk = 1 << 20;
const char kZeros[2 * kBlock] = {};

void put_str(char* b, size_t off, size_t len, std::string_view s) {
  std::memcpy(b + off, s.data(), std::min(len, s.size()));
}

// len-1 octal digits, zero-padded, then NUL
void put_octal(char* b, size_t off, size_t len, uint64_t v) {
  b[off + len - 1] = '\0';
  for (size_t i = len - 1; i-- > 0; v >>= 3) b[off + i] = static_cast<char>('0' + (v & 7));
}

// Octal when it fits the field (len-1 digits), else GNU base-256: big-endian two's complement
// over the whole field, the high bit of the first byte set. True when octal was used.
bool put_number(char* b, size_t off, size_t len, int64_t v) {
  if (v >= 0 && (static_cast<uint64_t>(v) >> ((len - 1) * 3)) == 0) {
    put_octal(b, off, len, static_cast<uint64_t>(v));
    return true;
  }
  for (size_t i = len; i-- > 0; v >>= 8) b[off + i] = static_cast<char>(v & 0xff);
  b[off] = static_cast<char>(static_cast<uint8_t>(b[off]) | 0x80);
  return false;
}

std::string pax_record(std::string_view key, std::string_view value) {
  // "<len> key=value\n" where len counts itself
  size_t body = key.size() + value.size() + 3;  // ' ', '=', '\n'
  size_t len = body + std::to_string(body).size();
  if (std::to_string(len).size() != std::to_string(body).size()) ++len;
  std::string r = std::to_string(len);
  r.append(" ").append(key).append("=").append(value).append("\n");
  return r;
}

}  // namespace

// --- TarWriter -------------------------------------------------------------------------------

TarWriter::TarWriter(int fd)
    : out_([fd](const void* p, size_t n) {
        if (!write_all(fd, p, n)) throw_errno("write archive");
      }) {}

TarWriter::TarWriter(Sink out) : out_(std::move(out)) {}

void TarWriter::write(const void* p, size_t n) {
  out_(p, n);
  written_ += n;
}

void TarWriter::header(const TarEntry& e, uint64_t size) {
  std::string name = e.path, prefix;
  std::string pax;
  if (name.size() > 100) {
    // ustar's prefix/name split at a '/', else a PAX path record
    size_t cut = name.rfind('/', 155);
    if (cut != std::string::npos && cut > 0 && name.size() - cut - 1 <= 100 &&
        name.size() - cut - 1 > 0) {
      prefix = name.substr(0, cut);
      name = name.substr(cut + 1);
    } else {
      pax += pax_record("path", e.path);
      name = e.path.substr(0, 100);
    }
  }
  if (e.linkpath.size() > 100) pax += pax_record("linkpath", e.linkpath);

  char b[kBlock] = {};
  put_str(b, 0, 100, name);
  put_octal(b, 100, 8, e.mode & 07777);
  if (!put_number(b, 108, 8, e.uid)) pax += pax_record("uid", std::to_string(e.uid));
  if (!put_number(b, 116, 8, e.gid)) pax += pax_record("gid", std::to_string(e.gid));
  if (!put_number(b, 124, 12, static_cast<int64_t>(size)))
    pax += pax_record("size", std::to_string(size));
  if (!put_number(b, 136, 12, e.mtime.tv_sec))
    pax += pax_record("mtime", std::to_string(e.mtime.tv_sec));
  b[156] = static_cast<char>(e.type);
  put_str(b, 157, 100, e.linkpath);
  std::memcpy(b + 257,
              "ustar\0"
              "00",
              8);
  if (e.type == TarEntry::Type::chardev || e.type == TarEntry::Type::blockdev) {
    put_number(b, 329, 8, e.devmajor);
    put_number(b, 337, 8, e.devminor);
  }
  put_str(b, 345, 155, prefix);
  for (auto& [xname, value] : e.xattrs) pax += pax_record("SCHILY.xattr." + xname, value);

  if (!pax.empty()) {
    TarEntry x;
    x.type = static_cast<TarEntry::Type>('x');
    x.path = "PaxHeaders/" + std::to_string(written_);
    x.mode = 0644;
    header(x, pax.size());
    write(pax.data(), pax.size());
    write(kZeros, tar::padding(pax.size()));
  }
  std::memset(b + 148, ' ', 8);
  unsigned sum = 0;
  for (unsigned char c : b) sum += c;
  put_octal(b, 148, 7, sum);  // six digits, NUL, then the space left by memset
  write(b, kBlock);
}

void TarWriter::data(const std::string& path, uint64_t size, const Producer& produce) {
  uint64_t done = 0;
  if (produce)
    produce([&](const void* p, size_t n) {
      if (done + n > size)
        throw Error(path + ": more data than the " + std::to_string(size) + " bytes announced",
                    EIO);
      write(p, n);
      done += n;
    });
  if (done != size)
    throw Error(path + ": " + std::to_string(done) + " bytes instead of " + std::to_string(size),
                EIO);
  write(kZeros, tar::padding(size));
}

void TarWriter::add(const TarEntry& e, const Producer& produce) {
  uint64_t size = e.type == TarEntry::Type::file ? e.size : 0;
  header(e, size);
  data(e.path, size, produce);
}

void TarWriter::add_dir(const std::string& path, uint32_t mode) {
  add({.type = TarEntry::Type::dir, .path = path.ends_with("/") ? path : path + "/", .mode = mode});
}

void TarWriter::add_file(const std::string& path, std::string_view data, uint32_t mode) {
  add_file(
      path, data.size(), [&](const Sink& sink) { sink(data.data(), data.size()); }, mode);
}

void TarWriter::add_file(const std::string& path, uint64_t size, const Producer& produce,
                         uint32_t mode) {
  add({.type = TarEntry::Type::file, .path = path, .size = size, .mode = mode}, produce);
}

void TarWriter::add_symlink(const std::string& path, const std::string& target) {
  add({.type = TarEntry::Type::symlink, .path = path, .linkpath = target, .mode = 0777});
}

void TarWriter::finish() {
  write(kZeros, sizeof kZeros);
}

// --- write_tree ------------------------------------------------------------------------------

namespace {

class TreeWriter {
 public:
  TreeWriter(TarWriter& w, std::string dir, const WriteTreeOptions& o)
      : w_(w), dir_(std::move(dir)), o_(o), buf_(kChunk) {}

  void run() {
    UniqueFd root(::open(dir_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!root) throw_errno("open " + dir_);
    struct stat st;
    if (::fstat(root.get(), &st) != 0) throw_errno("stat " + dir_);
    TarEntry e = entry_of(st, "./");
    e.type = TarEntry::Type::dir;
    capability(root.get(), "./", e);
    w_.add(e);
    enter(std::move(root), "./");
    while (!levels_.empty()) {
      Level& l = levels_.back();
      if (l.next == l.names.size()) {
        levels_.pop_back();
        continue;
      }
      std::string name = l.names[l.next++];
      one(l.fd.get(), name, l.path + name);  // (may add a level: l is not used after it)
    }
  }

 private:
  struct Level {
    UniqueFd fd;
    std::string path;  // as written, "./a/"
    std::vector<std::string> names;
    size_t next = 0;
  };

  std::string host(const std::string& path) const { return dir_ + path.substr(1); }

  static TarEntry entry_of(const struct stat& st, const std::string& path) {
    TarEntry e;
    e.path = path;
    e.mode = st.st_mode & 07777;
    e.uid = st.st_uid;
    e.gid = st.st_gid;
    e.mtime = {st.st_mtim.tv_sec, 0};
    e.atime = e.mtime;
    return e;
  }

  // The names in the directory open as fd, sorted; fd stays open (for the walk below it).
  void enter(UniqueFd fd, const std::string& path) {
    UniqueFd dup(::fcntl(fd.get(), F_DUPFD_CLOEXEC, 0));
    if (!dup) throw_errno("open " + host(path));
    DIR* d = ::fdopendir(dup.get());
    if (!d) throw_errno("read directory " + host(path));
    dup.release();  // closedir closes it
    std::vector<std::string> names;
    for (;;) {
      errno = 0;
      dirent* de = ::readdir(d);
      if (!de) break;
      if (std::strcmp(de->d_name, ".") != 0 && std::strcmp(de->d_name, "..") != 0)
        names.emplace_back(de->d_name);
    }
    int err = errno;
    ::closedir(d);
    if (err != 0) throw_errno("read directory " + host(path), err);
    std::sort(names.begin(), names.end());
    levels_.push_back({std::move(fd), path, std::move(names)});
  }

  // security.capability, the one xattr kept (as GNU tar's --xattrs-include did).
  void capability(int fd, const std::string& path, TarEntry& e) {
    char v[256];
    ssize_t n = ::fgetxattr(fd, kCapability, v, sizeof v);
    if (n >= 0) {
      e.xattrs.emplace_back(kCapability, std::string(v, static_cast<size_t>(n)));
      return;
    }
    if (errno != ENODATA && errno != ENOTSUP)
      throw_errno("read xattr " + std::string(kCapability) + " of " + host(path));
  }

  void one(int dirfd, const std::string& name, std::string path) {
    struct stat st;
    if (::fstatat(dirfd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0)
      throw_errno("stat " + host(path));
    if (S_ISSOCK(st.st_mode)) return;  // as tar: a socket is not archived
    if (S_ISDIR(st.st_mode)) path += "/";
    if (o_.skip && o_.skip(path)) return;
    TarEntry e = entry_of(st, path);
    if (!S_ISDIR(st.st_mode) && st.st_nlink > 1) {
      auto [it, first] = links_.try_emplace(std::make_pair(st.st_dev, st.st_ino), path);
      if (!first) {
        e.type = TarEntry::Type::hardlink;
        e.linkpath = it->second;
        return w_.add(e);
      }
    }
    if (S_ISDIR(st.st_mode)) {
      UniqueFd fd(::openat(dirfd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
      if (!fd) throw_errno("open " + host(path));
      e.type = TarEntry::Type::dir;
      capability(fd.get(), path, e);
      w_.add(e);
      return enter(std::move(fd), path);
    }
    if (S_ISREG(st.st_mode)) return file(dirfd, name, e);
    if (S_ISLNK(st.st_mode)) {
      std::vector<char> target(static_cast<size_t>(std::max<off_t>(st.st_size, PATH_MAX)) + 1);
      ssize_t n = ::readlinkat(dirfd, name.c_str(), target.data(), target.size());
      if (n < 0) throw_errno("read symlink " + host(path));
      if (static_cast<size_t>(n) == target.size())
        throw Error("read symlink " + host(path) + ": target changed while archived", EIO);
      e.type = TarEntry::Type::symlink;
      e.linkpath.assign(target.data(), static_cast<size_t>(n));
      return w_.add(e);
    }
    e.type = S_ISCHR(st.st_mode)   ? TarEntry::Type::chardev
             : S_ISBLK(st.st_mode) ? TarEntry::Type::blockdev
                                   : TarEntry::Type::fifo;
    if (!S_ISFIFO(st.st_mode)) {
      e.devmajor = major(st.st_rdev);
      e.devminor = minor(st.st_rdev);
    }
    w_.add(e);
  }

  void file(int dirfd, const std::string& name, TarEntry& e) {
    UniqueFd fd(::openat(dirfd, name.c_str(), O_RDONLY | O_NOFOLLOW | O_NOCTTY | O_CLOEXEC));
    if (!fd) throw_errno("open " + host(e.path));
    struct stat st;
    if (::fstat(fd.get(), &st) != 0) throw_errno("stat " + host(e.path));
    if (!S_ISREG(st.st_mode))
      throw Error("open " + host(e.path) + ": replaced while archived", EIO);
    e.type = TarEntry::Type::file;
    e.size = static_cast<uint64_t>(st.st_size);
    capability(fd.get(), e.path, e);
    w_.add(e, [&](const Sink& sink) {
      uint64_t left = e.size;
      while (left > 0) {
        ssize_t n = ::read(fd.get(), buf_.data(),
                           static_cast<size_t>(std::min<uint64_t>(left, buf_.size())));
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) throw_errno("read " + host(e.path));
        if (n == 0) throw Error("read " + host(e.path) + ": file shrank while archived", EIO);
        sink(buf_.data(), static_cast<size_t>(n));
        left -= static_cast<uint64_t>(n);
      }
    });
  }

  TarWriter& w_;
  std::string dir_;
  const WriteTreeOptions& o_;
  std::vector<char> buf_;
  std::vector<Level> levels_;
  std::map<std::pair<dev_t, ino_t>, std::string> links_;  // inode -> first path written
};

}  // namespace

void write_tree(TarWriter& w, const std::string& dir, const WriteTreeOptions& o) {
  TreeWriter(w, dir, o).run();
}

}  // namespace racker::image
