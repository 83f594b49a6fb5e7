#include "image/unpack.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cerrno>
#include <climits>
#include <cstdlib>
#include <memory>
#include <optional>
#include <set>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "base/error.hpp"
#include "base/fd.hpp"
#include "base/fs.hpp"
#include "base/log.hpp"
#include "base/strings.hpp"
#include "image/decompress.hpp"
#include "image/tar.hpp"

// How containment works: every entry's parent directory is opened with openat2(RESOLVE_IN_ROOT)
// on a descriptor of the target directory, so "..", absolute paths and symlinks (including ones
// this layer created) resolve inside it. The last component is then created or replaced with
// *at() calls on that parent descriptor, none of which follows a symlink there. Hardlink sources
// are resolved the same way, so a link can only share an inode this unpack created.

namespace racker::image {
namespace {

constexpr size_t kMaxCachedDirs = 128;  // well under RLIMIT_NOFILE, plenty for tar's dir order
constexpr const char* kWhiteoutPrefix = ".wh.";
constexpr const char* kOpaqueMarker = ".wh..wh..opq";

int openat2_in_root(int root, const std::string& path, uint64_t flags) {
  open_how how{};
  how.flags = flags | O_CLOEXEC;
  how.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS;
  for (int tries = 0;; ++tries) {
    long fd = syscall(SYS_openat2, root, path.c_str(), &how, sizeof how);
    if (fd >= 0) return static_cast<int>(fd);
    // EAGAIN: the kernel saw a concurrent rename while resolving ".."; retrying is the cure.
    if ((errno != EAGAIN && errno != EINTR) || tries > 64) return -1;
  }
}

// Archive path -> path relative to the root with "." and ".." folded lexically and never above
// the root ("" is the root itself). The kernel's RESOLVE_IN_ROOT is what actually contains it.
std::string relative(std::string_view archive_path) {
  std::string abs(1, '/');  // (not "/" + string: g++ 12 raises a false -Wrestrict on it)
  abs.append(archive_path);
  std::string p = clean_path(abs);
  return p == "/" ? std::string() : p.substr(1);
}

std::pair<std::string, std::string> split_last(const std::string& rel) {
  size_t slash = rel.rfind('/');
  if (slash == std::string::npos) return {"", rel};
  return {rel.substr(0, slash), rel.substr(slash + 1)};
}

// The process umask, without changing it (umask(2) cannot read it alone); nullopt if unknown.
std::optional<mode_t> current_umask() {
  auto status = read_file_if_exists("/proc/self/status");
  if (!status) return std::nullopt;
  size_t at = status->find("\nUmask:");
  if (at == std::string::npos) return std::nullopt;
  return static_cast<mode_t>(std::strtoul(status->c_str() + at + 7, nullptr, 8));
}

bool is_overlay_xattr(const std::string& name) {
  return name.starts_with("trusted.overlay.") || name.starts_with("user.overlay.");
}

class Unpacker {
 public:
  Unpacker(int root, std::vector<std::string> lowers)
      : root_(root), euid_(geteuid()), egid_(getegid()), lowers_(std::move(lowers)) {
    umask_ = current_umask();
    struct stat st;
    if (fstat(root_, &st) < 0) throw_errno("stat target directory");
    root_gid_ = st.st_gid;
    root_setgid_ = st.st_mode & S_ISGID;
    // A default ACL replaces the umask for new files: then modes are always set explicitly.
    acl_default_ = fgetxattr(root_, "system.posix_acl_default", nullptr, 0) >= 0;
  }

  void apply(const TarEntry& e, TarReader& tr) {
    cur_ = &e;
    retired_.clear();
    if (dirs_.size() >= kMaxCachedDirs) dirs_.clear();

    std::string rel = relative(e.path);
    if (rel.empty()) return apply_root(e);
    auto [dir, name] = split_last(rel);
    Dir parent = parent_dir(dir, true);

    if (name.starts_with(kWhiteoutPrefix)) return apply_whiteout(parent, dir, name);
    switch (e.type) {
      case TarEntry::Type::file:
        return make_file(parent, name, e, tr);
      case TarEntry::Type::dir:
        return make_dir(parent, rel, name, e);
      case TarEntry::Type::symlink:
        return make_symlink(parent, name, e);
      case TarEntry::Type::hardlink:
        return make_hardlink(parent, name, e);
      case TarEntry::Type::chardev:
      case TarEntry::Type::blockdev:
      case TarEntry::Type::fifo:
        return make_node(parent, name, e);
    }
  }

  // Directory times last: creating their contents changed them.
  // What only the lower layers can settle (LayerFixups), once they are complete.
  LayerFixups fixups() const {
    LayerFixups f;
    f.implicit_dirs.assign(implicit_dirs_.begin(), implicit_dirs_.end());
    f.whiteouts = whiteouts_;
    return f;
  }

  void finish() {
    cur_ = nullptr;
    // the first five paths, and how many more
    auto some = [](const std::vector<std::string>& paths) {
      std::string names;
      for (size_t i = 0; i < paths.size() && i < 5; ++i) names += (i ? ", " : "") + paths[i];
      if (paths.size() > 5) names += " and " + std::to_string(paths.size() - 5) + " more";
      return names;
    };
    if (!skipped_devices_.empty())
      log::warn("device nodes cannot be made here (a user namespace): skipped " +
                some(skipped_devices_));
    if (!unmapped_owner_.empty())
      log::warn(
          "owners beyond the ids of this user namespace (a larger subordinate range in "
          "/etc/subuid and /etc/subgid gives them): kept as root's for " +
          some(unmapped_owner_));
    for (auto& [path, ts] : dir_times_) {
      if (auto it = dirs_.find(path);
          it != dirs_.end() && it->second.exact && futimens(it->second.fd.get(), ts.data()) == 0)
        continue;
      UniqueFd fd(openat2_in_root(root_, path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW));
      if (!fd) continue;  // replaced by a later entry
      if (futimens(fd.get(), ts.data()) < 0) fail_at(path, "set times");
    }
    if (root_times_ && futimens(root_, root_times_->data()) < 0) fail_at(".", "set times");
  }

 private:
  struct Dir {
    int fd;
    gid_t gid;    // new entries may inherit it (setgid, or a "grpid" mount)
    bool setgid;  // new subdirectories inherit the setgid bit
  };
  struct CachedDir {
    UniqueFd fd;
    gid_t gid;
    bool setgid;
    bool exact = false;  // opened by its own directory entry (O_RDONLY, not via another path)
  };
  using Times = std::array<timespec, 2>;

  [[noreturn]] void fail(const std::string& what, int err = errno) const {
    fail_at(cur_ ? cur_->path : std::string(), what, err);
  }
  [[noreturn]] static void fail_at(const std::string& path, const std::string& what,
                                   int err = errno) {
    throw_errno("entry \"" + path + "\": " + what, err);
  }

  static Times times(const TarEntry& e) { return {e.atime, e.mtime}; }

  // Opens (and caches) the directory at rel, resolved inside the root; with create, missing
  // directories are made (0755), as tar and containerd do for entries whose parent is absent.
  Dir parent_dir(const std::string& rel, bool create) {
    if (rel.empty()) return {root_, root_gid_, root_setgid_};
    if (auto it = dirs_.find(rel); it != dirs_.end())
      return {it->second.fd.get(), it->second.gid, it->second.setgid};
    UniqueFd fd(openat2_in_root(root_, rel, O_PATH | O_DIRECTORY));
    if (!fd && errno == ENOENT && create) fd = make_dirs(rel);
    if (fd) {
      struct stat st;
      if (fstat(fd.get(), &st) < 0) fail("stat directory \"" + rel + "\"");
      int raw = fd.get();
      dirs_[rel] = CachedDir{std::move(fd), st.st_gid, (st.st_mode & S_ISGID) != 0, false};
      return {raw, st.st_gid, (st.st_mode & S_ISGID) != 0};
    }
    if (errno == ENOENT) {
      fail("directory \"" + rel + "\" is not in the layer");
    }
    fail("open directory \"" + rel + "\"");
  }

  // The slow path for a parent that does not exist yet: walks rel from the root the way the
  // kernel would, following symlinks but never above the root, and creates what is missing
  // (0755), as containerd does. Every step is an *at() call on a directory already inside.
  UniqueFd make_dirs(const std::string& rel) {
    std::vector<std::string> todo;  // components still to walk, next one last
    auto push_path = [&todo](std::string_view path) {
      std::vector<std::string> parts;
      size_t i = 0;
      while (i <= path.size()) {
        size_t j = std::min(path.find('/', i), path.size());
        if (j > i) parts.emplace_back(path.substr(i, j - i));
        i = j + 1;
      }
      todo.insert(todo.end(), parts.rbegin(), parts.rend());
    };
    push_path(rel);
    std::string real;  // resolved so far: real directories only
    UniqueFd cur;      // open on real (invalid: the root)
    auto cur_fd = [&] { return cur ? cur.get() : root_; };
    auto go_to_root = [&] {
      real.clear();
      cur.reset();
    };
    int links = 0;
    while (!todo.empty()) {
      std::string c = std::move(todo.back());
      todo.pop_back();
      if (c == ".") continue;
      if (c == "..") {
        std::string up = split_last(real).first;
        go_to_root();
        if (!up.empty()) {
          cur.reset(openat2_in_root(root_, up, O_PATH | O_DIRECTORY));
          if (!cur) fail("open directory \"" + up + "\"");
          real = up;
        }
        continue;
      }
      std::string next_path = real.empty() ? c : real + "/" + c;
      struct stat st;
      if (fstatat(cur_fd(), c.c_str(), &st, AT_SYMLINK_NOFOLLOW) < 0) {
        if (errno != ENOENT) fail("stat \"" + next_path + "\"");
        if (mkdirat(cur_fd(), c.c_str(), 0755) < 0) fail("create directory \"" + next_path + "\"");
        st.st_mode = S_IFDIR;
        implicit_dirs_.insert(next_path);
      }
      if (S_ISLNK(st.st_mode)) {
        if (++links > 40) fail("resolve \"" + rel + "\"", ELOOP);
        char target[PATH_MAX];
        ssize_t n = readlinkat(cur_fd(), c.c_str(), target, sizeof target);
        if (n < 0) fail("read symlink \"" + next_path + "\"");
        std::string_view t(target, static_cast<size_t>(n));
        if (t.starts_with('/')) go_to_root();
        push_path(t);
        continue;
      }
      if (!S_ISDIR(st.st_mode)) fail("\"" + next_path + "\" is not a directory", ENOTDIR);
      UniqueFd next(openat(cur_fd(), c.c_str(), O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
      if (!next) fail("open directory \"" + next_path + "\"");
      cur = std::move(next);
      real = std::move(next_path);
    }
    if (!cur) cur.reset(fcntl(root_, F_DUPFD_CLOEXEC, 0));  // it led back to the root
    if (!cur) fail("dup target directory");
    return cur;
  }

  // A path that resolved through a directory or symlink being replaced may now mean something
  // else: forget every cached directory (closing them only after the current entry is done).
  void invalidate_dirs() {
    for (auto& [_, d] : dirs_) retired_.push_back(std::move(d.fd));
    dirs_.clear();
  }

  // rm -rf of the directory name under dirfd, never following symlinks (base/fs.hpp: constant
  // stack and a bounded number of descriptors however deep a hostile layer nests).
  void remove_tree_at(int dirfd, const char* name) const {
    try {
      racker::remove_tree_at(dirfd, name);
    } catch (const Error& e) {
      fail(e.what(), e.err());
    }
  }

  // Removes whatever is at name (an earlier entry of this layer with the same path). True if
  // it was a directory: then every cached directory descriptor but dirfd is closed already.
  bool remove_existing(int dirfd, const std::string& name) {
    struct stat st;
    if (fstatat(dirfd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) < 0) {
      if (errno == ENOENT) return false;
      fail("stat existing entry");
    }
    if (S_ISDIR(st.st_mode)) {
      // Closed before, not after: a descriptor of a directory inside the tree would keep it
      // and its ancestors in the kernel's dentry cache, and each rmdir above would walk that
      // chain again (quadratic in the depth a hostile layer chooses).
      for (auto& [_, d] : dirs_)
        if (d.fd.get() == dirfd) retired_.push_back(std::move(d.fd));  // the caller's
      dirs_.clear();
      remove_tree_at(dirfd, name.c_str());
      return true;
    }
    if (unlinkat(dirfd, name.c_str(), 0) < 0) fail("remove existing entry");
    if (S_ISLNK(st.st_mode)) invalidate_dirs();
    return false;
  }

  // The result of a chown of the current entry. An id our user namespace does not map
  // (EINVAL: an ordinary user's subordinate range is smaller than the image's ids) leaves
  // the entry ours, noted for one warning, as device nodes are; anything else fails.
  void chowned(int result) {
    if (result == 0) return;
    if (errno == EINVAL) {
      unmapped_owner_.push_back(cur_ ? cur_->path : "/");
      return;
    }
    fail("chown");
  }

  // Whether a new inode needs fchown/fchmod to get the archive's owner and mode.
  bool needs_chown(const Dir& p, const TarEntry& e) const {
    return e.uid != euid_ || e.gid != egid_ || p.gid != egid_;
  }
  bool needs_chmod(const Dir& p, const TarEntry& e) const {
    return (e.mode & 07000) || !umask_ || (*umask_ & e.mode & 0777) || p.setgid || acl_default_;
  }

  void set_xattrs_fd(int fd, const TarEntry& e) {
    for (auto& [name, value] : e.xattrs) {
      if (is_overlay_xattr(name)) continue;  // only this unpacker writes overlay metadata
      if (fsetxattr(fd, name.c_str(), value.data(), value.size(), 0) < 0) xattr_failed(name);
      if (name == "system.posix_acl_default") acl_default_ = true;
    }
  }
  // For inodes that cannot be opened (symlinks, devices, fifos): the parent descriptor's
  // /proc magic link names the directory that was resolved inside the root.
  void set_xattrs_at(int dirfd, const std::string& name, const TarEntry& e) {
    std::string path;
    for (auto& [xname, value] : e.xattrs) {
      if (is_overlay_xattr(xname)) continue;
      if (path.empty()) path = "/proc/self/fd/" + std::to_string(dirfd) + "/" + name;
      if (lsetxattr(path.c_str(), xname.c_str(), value.data(), value.size(), 0) < 0)
        xattr_failed(xname);
    }
  }
  void xattr_failed(const std::string& name) {
    // Like containerd: a filesystem without support for a namespace is not fatal.
    if (errno == ENOTSUP) {
      if (!warned_xattr_) log::warn("unpack: xattr " + name + " not supported here; skipped");
      warned_xattr_ = true;
      return;
    }
    fail("set xattr " + name);
  }

  void apply_root(const TarEntry& e) {
    if (e.type != TarEntry::Type::dir)
      fail("resolves to the layer root but is not a directory", EINVAL);
    chowned(fchown(root_, e.uid, e.gid));
    if (fchmod(root_, e.mode) < 0) fail("chmod");
    set_xattrs_fd(root_, e);
    root_gid_ = e.gid;
    root_setgid_ = e.mode & S_ISGID;
    root_times_ = times(e);
  }

  void apply_whiteout(const Dir& parent, const std::string& dir, const std::string& name) {
    if (name == kOpaqueMarker) {
      // The directory hides what lower layers hold in it: overlayfs calls that opaque.
      UniqueFd fd(openat(parent.fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
      if (!fd) fail("open directory \"" + dir + "\"");
      // trusted.* needs the host's root; in a rootless namespace overlayfs reads user.*
      // (mounted with userxattr)
      if (fsetxattr(fd.get(), "trusted.overlay.opaque", "y", 1, 0) < 0 &&
          (errno != EPERM || fsetxattr(fd.get(), "user.overlay.opaque", "y", 1, 0) < 0))
        fail("set overlay.opaque");
      return;
    }
    if (name.starts_with(".wh..wh.")) return;  // other AUFS metadata: nothing to create
    std::string target = name.substr(4);
    if (target.empty() || target == "." || target == "..") fail("invalid whiteout", EINVAL);
    // overlayfs whiteout: a 0:0 character device. If this layer itself has an entry there, it
    // stays: a whiteout only hides lower layers.
    if (mknodat(parent.fd, target.c_str(), S_IFCHR | 0, makedev(0, 0)) == 0)
      whiteouts_.push_back(dir.empty() ? target : dir + "/" + target);
    else if (errno != EEXIST)
      fail("create whiteout");
  }

  void make_file(const Dir& p, const std::string& name, const TarEntry& e, TarReader& tr) {
    const int flags = O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC;
    UniqueFd fd(openat(p.fd, name.c_str(), flags, e.mode & 0777));
    if (!fd && errno == EEXIST) {
      remove_existing(p.fd, name);
      fd.reset(openat(p.fd, name.c_str(), flags, e.mode & 0777));
    }
    if (!fd) fail("create file");
    for (auto data = tr.read_data(); !data.empty(); data = tr.read_data())
      if (!write_all(fd.get(), data.data(), data.size())) fail("write");
    // Order matters: chown clears setuid/setgid and security.capability, writes clear caps.
    if (needs_chown(p, e)) chowned(fchown(fd.get(), e.uid, e.gid));
    if (needs_chmod(p, e) && fchmod(fd.get(), e.mode) < 0) fail("chmod");
    set_xattrs_fd(fd.get(), e);
    Times ts = times(e);
    if (futimens(fd.get(), ts.data()) < 0) fail("set times");
  }

  void make_dir(const Dir& p, const std::string& rel, const std::string& name, const TarEntry& e) {
    bool existed = false;
    if (mkdirat(p.fd, name.c_str(), e.mode & 0777) < 0) {
      if (errno != EEXIST) fail("create directory");
      struct stat st;
      if (fstatat(p.fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) < 0) fail("stat existing entry");
      if (S_ISDIR(st.st_mode)) {
        existed = true;  // a directory over a directory keeps its contents
      } else {
        remove_existing(p.fd, name);
        if (mkdirat(p.fd, name.c_str(), e.mode & 0777) < 0) fail("create directory");
      }
    }
    UniqueFd fd(openat(p.fd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!fd) fail("open directory");
    if (existed || needs_chown(p, e)) chowned(fchown(fd.get(), e.uid, e.gid));
    if ((existed || needs_chmod(p, e)) && fchmod(fd.get(), e.mode) < 0) fail("chmod");
    set_xattrs_fd(fd.get(), e);
    dir_times_.emplace_back(rel, times(e));
    implicit_dirs_.erase(rel);
    // Its children usually come next: keep the descriptor as their parent.
    if (auto it = dirs_.find(rel); it != dirs_.end()) retired_.push_back(std::move(it->second.fd));
    dirs_[rel] = CachedDir{std::move(fd), e.gid, (e.mode & S_ISGID) != 0, true};
  }

  void make_symlink(const Dir& p, const std::string& name, const TarEntry& e) {
    // The target is stored as data; it is never followed here (resolution stays in the root).
    if (symlinkat(e.linkpath.c_str(), p.fd, name.c_str()) < 0) {
      if (errno != EEXIST) fail("create symlink");
      remove_existing(p.fd, name);
      if (symlinkat(e.linkpath.c_str(), p.fd, name.c_str()) < 0) fail("create symlink");
    }
    if (needs_chown(p, e)) chowned(fchownat(p.fd, name.c_str(), e.uid, e.gid, AT_SYMLINK_NOFOLLOW));
    set_xattrs_at(p.fd, name, e);
    Times ts = times(e);
    if (utimensat(p.fd, name.c_str(), ts.data(), AT_SYMLINK_NOFOLLOW) < 0) fail("set times");
  }

  void make_hardlink(const Dir& p, const std::string& name, const TarEntry& e) {
    try {
      link_in_layer(p, name, e);
    } catch (const Error& err) {
      // a link to a file that only a lower layer has: the layer gets its own copy
      if (err.err() != ENOENT || !copy_from_lower(p, name, relative(e.linkpath))) throw;
    }
  }

  // Copies the regular file at rel from the topmost lower layer that has it (a whiteout there
  // ends the search). False when no lower layer has a regular file at rel.
  bool copy_from_lower(const Dir& p, const std::string& name, const std::string& rel) {
    if (rel.empty()) return false;
    for (auto& lower : lowers_) {
      UniqueFd lroot(open(lower.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
      if (!lroot) continue;
      UniqueFd src(openat2_in_root(lroot.get(), rel, O_RDONLY | O_NOFOLLOW));
      if (!src) {
        if (errno == ENOENT) continue;
        return false;
      }
      struct stat st;
      if (fstat(src.get(), &st) < 0 || !S_ISREG(st.st_mode)) return false;
      remove_existing(p.fd, name);
      UniqueFd dst(
          openat(p.fd, name.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
      if (!dst) fail("create copy of lower-layer file");
      for (;;) {
        ssize_t n = copy_file_range(src.get(), nullptr, dst.get(), nullptr, 1 << 30, 0);
        if (n < 0) fail("copy lower-layer file");
        if (n == 0) break;
      }
      chowned(fchown(dst.get(), st.st_uid, st.st_gid));
      if (fchmod(dst.get(), st.st_mode & 07777) < 0) fail("chmod");
      struct timespec ts[2] = {st.st_atim, st.st_mtim};
      if (futimens(dst.get(), ts) < 0) fail("set times");
      return true;
    }
    return false;
  }

  void link_in_layer(const Dir& p, const std::string& name, const TarEntry& e) {
    std::string src = relative(e.linkpath);
    if (src.empty()) fail("hardlink to the layer root", EINVAL);
    auto [src_dir, src_name] = split_last(src);
    Dir sp = parent_dir(src_dir, false);
    // linkat without AT_SYMLINK_FOLLOW links a symlink itself, never what it points to.
    if (linkat(sp.fd, src_name.c_str(), p.fd, name.c_str(), 0) == 0) return;
    if (errno == ENOENT) fail("hardlink target \"" + e.linkpath + "\" is not in the layer");
    if (errno != EEXIST) fail("hardlink to \"" + e.linkpath + "\"");
    struct stat a, b;
    if (fstatat(sp.fd, src_name.c_str(), &a, AT_SYMLINK_NOFOLLOW) == 0 &&
        fstatat(p.fd, name.c_str(), &b, AT_SYMLINK_NOFOLLOW) == 0 && a.st_dev == b.st_dev &&
        a.st_ino == b.st_ino)
      return;  // already that inode (e.g. a link to itself)
    // sp's descriptor is closed if a directory was removed: the source is resolved again (it
    // may have been in that directory).
    if (remove_existing(p.fd, name)) sp = parent_dir(src_dir, false);
    if (linkat(sp.fd, src_name.c_str(), p.fd, name.c_str(), 0) < 0)
      fail("hardlink to \"" + e.linkpath + "\"");
  }

  void make_node(const Dir& p, const std::string& name, const TarEntry& e) {
    mode_t type = e.type == TarEntry::Type::chardev    ? S_IFCHR
                  : e.type == TarEntry::Type::blockdev ? S_IFBLK
                                                       : S_IFIFO;
    dev_t dev = type == S_IFIFO ? 0 : makedev(e.devmajor, e.devminor);
    if (mknodat(p.fd, name.c_str(), type | (e.mode & 0777), dev) < 0) {
      if (errno == EPERM && type != S_IFIFO) {
        // a user namespace (rootless) may not make devices: the layer goes without them
        skipped_devices_.push_back(cur_ ? cur_->path : name);
        return;
      }
      if (errno != EEXIST) fail("create device node");
      remove_existing(p.fd, name);
      if (mknodat(p.fd, name.c_str(), type | (e.mode & 0777), dev) < 0) fail("create device node");
    }
    if (needs_chown(p, e)) chowned(fchownat(p.fd, name.c_str(), e.uid, e.gid, AT_SYMLINK_NOFOLLOW));
    // Not a symlink: it was just created as a node, so following is moot.
    if (needs_chmod(p, e) && fchmodat(p.fd, name.c_str(), e.mode, 0) < 0) fail("chmod");
    set_xattrs_at(p.fd, name, e);
    Times ts = times(e);
    if (utimensat(p.fd, name.c_str(), ts.data(), AT_SYMLINK_NOFOLLOW) < 0) fail("set times");
  }

  int root_;
  uid_t euid_;
  gid_t egid_;
  std::vector<std::string> lowers_;  // the lower layers' fs/ dirs, topmost first
  std::optional<mode_t> umask_;
  gid_t root_gid_ = 0;
  bool root_setgid_ = false;
  bool acl_default_ = false;
  bool warned_xattr_ = false;
  std::vector<std::string> unmapped_owner_;  // entries left ours (chowned)
  const TarEntry* cur_ = nullptr;
  std::unordered_map<std::string, CachedDir> dirs_;
  std::vector<UniqueFd> retired_;
  std::vector<std::pair<std::string, Times>> dir_times_;
  std::optional<Times> root_times_;
  std::set<std::string> implicit_dirs_;  // made for entries whose parents the layer lacks
  std::vector<std::string> whiteouts_;
  std::vector<std::string> skipped_devices_;
};

}  // namespace

ExpansionLimit expansion_limit_from_env() {
  ExpansionLimit l;
  auto parse = [](const char* var, uint64_t& out, bool suffixes) {
    const char* v = std::getenv(var);
    if (!v || !*v) return;
    std::string s = v;
    uint64_t mult = 1;
    if (suffixes && !s.empty()) {
      switch (std::tolower(static_cast<unsigned char>(s.back()))) {
        case 'k':
          mult = uint64_t{1} << 10;
          break;
        case 'm':
          mult = uint64_t{1} << 20;
          break;
        case 'g':
          mult = uint64_t{1} << 30;
          break;
      }
      if (mult != 1) s.pop_back();
    }
    auto n = parse_uint(s);
    if (!n || *n == 0 || *n > UINT64_MAX / mult)
      throw Error(std::string("invalid $") + var + " \"" + v + "\"", EINVAL);
    out = *n * mult;
  };
  parse("RACKER_MAX_LAYER_SIZE", l.min_bytes, true);
  parse("RACKER_MAX_LAYER_RATIO", l.ratio, false);
  return l;
}

UnpackStats unpack_layer(int fd, Compression c, const std::string& target_dir,
                         const std::vector<std::string>& lower_dirs, const ExpansionLimit& limit) {
  try {
    UniqueFd root(open(target_dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!root) throw_errno("open target directory");
    Unpacker unpacker(root.get(), lower_dirs);
    LayerStream stream(fd, c);
    struct stat st;
    uint64_t max_bytes = limit.min_bytes;
    if (::fstat(fd, &st) == 0 && S_ISREG(st.st_mode)) {
      uint64_t compressed = static_cast<uint64_t>(st.st_size);
      if (limit.ratio != 0 && compressed <= UINT64_MAX / limit.ratio)
        max_bytes = std::max(max_bytes, compressed * limit.ratio);
      else
        max_bytes = UINT64_MAX;
    }
    stream.limit(max_bytes, limit.what + " expands to more than " + std::to_string(max_bytes) +
                                " bytes, over " + std::to_string(limit.ratio) +
                                " times its compressed size: refused as a decompression bomb "
                                "(limits: $RACKER_MAX_LAYER_SIZE, $RACKER_MAX_LAYER_RATIO)");
    TarReader tar(stream);
    UnpackStats stats;
    TarEntry e;
    while (tar.next(e)) {
      ++stats.entries;
      unpacker.apply(e, tar);
    }
    tar.drain();
    unpacker.finish();
    stats.fixups = unpacker.fixups();
    stats.diff_id = stream.digest();
    stats.bytes = stream.bytes();
    return stats;
  } catch (const Error& e) {
    throw e.with_context("unpack layer into " + target_dir);
  }
}

namespace {

// What the topmost lower layer that has rel holds there: nullopt when none does.
std::optional<struct stat> lower_entry(const std::vector<std::string>& lower_dirs,
                                       const std::string& rel) {
  for (auto& lower : lower_dirs) {
    UniqueFd lroot(open(lower.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    if (!lroot) continue;
    UniqueFd fd(openat2_in_root(lroot.get(), rel, O_PATH | O_NOFOLLOW));
    if (!fd) continue;  // not there (or not reachable): look further down
    struct stat st;
    if (fstat(fd.get(), &st) == 0) return st;
  }
  return std::nullopt;
}

bool is_whiteout(const struct stat& st) {
  return S_ISCHR(st.st_mode) && st.st_rdev == makedev(0, 0);
}

}  // namespace

void fix_up_layer(const std::string& target_dir, const std::vector<std::string>& lower_dirs,
                  const LayerFixups& f) {
  UniqueFd root(open(target_dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!root) throw_errno("open " + target_dir);
  for (auto& rel : f.implicit_dirs) {
    auto below = lower_entry(lower_dirs, rel);
    if (!below || !S_ISDIR(below->st_mode)) continue;  // nothing to copy: 0755 root stays
    UniqueFd fd(openat2_in_root(root.get(), rel, O_RDONLY | O_DIRECTORY | O_NOFOLLOW));
    if (!fd) continue;  // replaced by a later entry of the layer
    struct stat st;
    if (fstat(fd.get(), &st) < 0) throw_errno("stat " + target_dir + "/" + rel);
    if ((st.st_uid != below->st_uid || st.st_gid != below->st_gid) &&
        fchown(fd.get(), below->st_uid, below->st_gid) < 0)
      throw_errno("chown " + target_dir + "/" + rel);
    if ((st.st_mode & 07777) != (below->st_mode & 07777) &&
        fchmod(fd.get(), below->st_mode & 07777) < 0)
      throw_errno("chmod " + target_dir + "/" + rel);
  }
  for (auto& rel : f.whiteouts) {
    auto below = lower_entry(lower_dirs, rel);
    if (below && !is_whiteout(*below)) continue;  // it hides something: it stays
    auto [dir, name] = split_last(rel);
    UniqueFd parent(dir.empty() ? fcntl(root.get(), F_DUPFD_CLOEXEC, 0)
                                : openat2_in_root(root.get(), dir, O_PATH | O_DIRECTORY));
    if (!parent) continue;
    struct stat st;
    if (fstatat(parent.get(), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 && is_whiteout(st) &&
        unlinkat(parent.get(), name.c_str(), 0) < 0 && errno != ENOENT)
      throw_errno("remove whiteout " + target_dir + "/" + rel);
  }
}

}  // namespace racker::image
