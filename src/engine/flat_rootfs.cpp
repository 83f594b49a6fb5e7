#include "engine/flat_rootfs.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cerrno>
#include <string>
#include <vector>

#include "base/error.hpp"
#include "base/fd.hpp"
#include "base/fs.hpp"

namespace racker::engine {
namespace {

bool is_whiteout(const struct stat& st) {
  return S_ISCHR(st.st_mode) && st.st_rdev == makedev(0, 0);
}

bool overlay_xattr(const std::string& name) {
  return name.starts_with("trusted.overlay.") || name.starts_with("user.overlay.");
}

// Copies the extended attributes of the file at src (not followed) to dst (a path through
// /proc/self/fd, so it is never resolved again), except overlayfs' own.
void copy_xattrs(const std::string& src, const std::string& dst) {
  ssize_t n = ::llistxattr(src.c_str(), nullptr, 0);
  if (n <= 0) return;
  std::string names(static_cast<size_t>(n), '\0');
  n = ::llistxattr(src.c_str(), names.data(), names.size());
  if (n <= 0) return;
  names.resize(static_cast<size_t>(n));
  for (size_t pos = 0; pos < names.size();) {
    std::string name(names.c_str() + pos);
    pos += name.size() + 1;
    if (name.empty() || overlay_xattr(name)) continue;
    ssize_t vn = ::lgetxattr(src.c_str(), name.c_str(), nullptr, 0);
    if (vn < 0) continue;
    std::string value(static_cast<size_t>(vn), '\0');
    vn = ::lgetxattr(src.c_str(), name.c_str(), value.data(), value.size());
    if (vn < 0) continue;
    if (::lsetxattr(dst.c_str(), name.c_str(), value.data(), static_cast<size_t>(vn), 0) != 0 &&
        errno != ENOTSUP && errno != EPERM)
      throw_errno("set " + name + " on " + dst);
  }
}

void remove_entry(int dirfd, const std::string& name, const std::string& path) {
  struct stat st;
  if (::fstatat(dirfd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) return;
  if (S_ISDIR(st.st_mode)) {
    remove_tree(path);  // never follows symlinks
  } else if (::unlinkat(dirfd, name.c_str(), 0) != 0) {
    throw_errno("remove " + path);
  }
}

void clear_dir(int dirfd, const std::string& path) {
  for (auto& n : dir_names_at(dirfd, path)) remove_entry(dirfd, n, path + "/" + n);
}

void set_meta(int dirfd, const std::string& name, const struct stat& st, bool symlink) {
  int flags = symlink ? AT_SYMLINK_NOFOLLOW : 0;
  if (::fchownat(dirfd, name.c_str(), st.st_uid, st.st_gid, AT_SYMLINK_NOFOLLOW) != 0)
    throw_errno("chown " + name);
  if (!symlink && ::fchmodat(dirfd, name.c_str(), st.st_mode & 07777, 0) != 0)
    throw_errno("chmod " + name);
  struct timespec t[2] = {st.st_atim, st.st_mtim};
  ::utimensat(dirfd, name.c_str(), t, flags | AT_SYMLINK_NOFOLLOW);
}

// One layer (src, an overlayfs-style layer dir) applied onto dst, both open directories.
void apply(int src, int dst, const std::string& src_path, const std::string& dst_path) {
  for (auto& n : dir_names_at(src, src_path)) {
    std::string sp = src_path + "/" + n, dp = dst_path + "/" + n;
    struct stat st;
    if (::fstatat(src, n.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) throw_errno("stat " + sp);
    if (is_whiteout(st)) {
      remove_entry(dst, n, dp);
      continue;
    }
    struct stat dt;
    bool exists = ::fstatat(dst, n.c_str(), &dt, AT_SYMLINK_NOFOLLOW) == 0;
    if (S_ISDIR(st.st_mode)) {
      if (exists && !S_ISDIR(dt.st_mode)) {
        remove_entry(dst, n, dp);
        exists = false;
      }
      if (!exists && ::mkdirat(dst, n.c_str(), 0700) != 0) throw_errno("mkdir " + dp);
      UniqueFd s(::openat(src, n.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
      UniqueFd t(::openat(dst, n.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
      if (!s || !t) throw_errno("open " + (s ? dp : sp));
      char v[4];
      ssize_t vn = ::fgetxattr(s.get(), "trusted.overlay.opaque", v, sizeof v);
      if (vn == 1 && v[0] == 'y') clear_dir(t.get(), dp);  // hides what lower layers had
      apply(s.get(), t.get(), sp, dp);
      copy_xattrs(sp, "/proc/self/fd/" + std::to_string(t.get()));
      set_meta(dst, n, st, false);
      continue;
    }
    if (exists) remove_entry(dst, n, dp);
    if (S_ISREG(st.st_mode)) {
      UniqueFd in(::openat(src, n.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
      if (!in) throw_errno("open " + sp);
      UniqueFd out(
          ::openat(dst, n.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
      if (!out) throw_errno("create " + dp);
      if (!copy_all(in.get(), out.get())) throw_errno("copy " + sp + " to " + dp);
      copy_xattrs(sp, "/proc/self/fd/" + std::to_string(out.get()));
      set_meta(dst, n, st, false);  // chown before chmod: chown clears setuid bits
    } else if (S_ISLNK(st.st_mode)) {
      std::string target(static_cast<size_t>(st.st_size) + 1, '\0');
      ssize_t len = ::readlinkat(src, n.c_str(), target.data(), target.size());
      if (len < 0) throw_errno("readlink " + sp);
      target.resize(static_cast<size_t>(len));
      if (::symlinkat(target.c_str(), dst, n.c_str()) != 0) throw_errno("symlink " + dp);
      set_meta(dst, n, st, true);
    } else {
      if (::mknodat(dst, n.c_str(), st.st_mode, st.st_rdev) != 0) throw_errno("mknod " + dp);
      set_meta(dst, n, st, false);
    }
  }
}

}  // namespace

void flatten_layers(const std::vector<std::string>& layers, const std::string& dst) {
  mkdir_p(dst, 0755);
  UniqueFd t(::open(dst.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!t) throw_errno("open " + dst);
  for (auto& layer : layers) {
    UniqueFd s(::open(layer.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!s) throw_errno("open " + layer);
    apply(s.get(), t.get(), layer, dst);
    struct stat st;
    if (::fstat(s.get(), &st) == 0) {
      ::fchown(t.get(), st.st_uid, st.st_gid);
      ::fchmod(t.get(), st.st_mode & 07777);
    }
  }
}

}  // namespace racker::engine
