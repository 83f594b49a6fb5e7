#include "base/fs.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <climits>
#include <cstdlib>
#include <vector>

#include "base/error.hpp"
#include "base/fd.hpp"

namespace racker {

std::optional<std::string> read_file_if_exists(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) {
    if (errno == ENOENT) return std::nullopt;
    throw_errno("open " + path);
  }
  std::string out;
  char buf[8192];
  for (;;) {
    ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw_errno("read " + path);
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

std::string read_file(const std::string& path) {
  auto s = read_file_if_exists(path);
  if (!s) throw_errno("open " + path, ENOENT);
  return *s;
}

void write_file_atomic(const std::string& path, std::string_view data, mode_t mode) {
  // A name of our own (process and call): concurrent writers of one path never share a
  // temporary file, and a failed write removes its own.
  static std::atomic<unsigned> calls{0};
  std::string tmp = path + ".tmp." + std::to_string(::getpid()) + "." + std::to_string(calls++);
  UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode));
  if (!fd) throw_errno("create " + tmp);
  auto fail = [&](const std::string& what) {
    int e = errno;
    ::unlink(tmp.c_str());
    throw_errno(what, e);
  };
  if (!write_all(fd.get(), data.data(), data.size())) fail("write " + tmp);
  fd.reset();
  if (::rename(tmp.c_str(), path.c_str()) != 0) fail("rename " + tmp);
}

void write_file(const std::string& path, std::string_view data) {
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CLOEXEC));
  if (!fd) throw_errno("open " + path);
  if (!write_all(fd.get(), data.data(), data.size())) throw_errno("write " + path);
}

void mkdir_p(const std::string& path, mode_t mode) {
  if (path.empty()) return;
  // the whole path first: where it (or its parent) exists, as it mostly does, that is all
  if (::mkdir(path.c_str(), mode) != 0) {
    if (errno == ENOENT) {
      size_t end = path.find_last_not_of('/');
      size_t slash = end == std::string::npos ? std::string::npos : path.rfind('/', end);
      if (slash != std::string::npos && slash > 0) mkdir_p(path.substr(0, slash), mode);
      if (::mkdir(path.c_str(), mode) != 0 && errno != EEXIST) throw_errno("mkdir " + path);
    } else if (errno != EEXIST) {
      throw_errno("mkdir " + path);
    }
  }
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) throw_errno("stat " + path);
  if (!S_ISDIR(st.st_mode)) throw Error("mkdir " + path + ": not a directory", ENOTDIR);
}

namespace {

// A tree removal holds at most this many directories open: the deepest ones on its way down.
// A directory above them is reopened through ".." of its child when the walk climbs back, and
// checked to be the one it came down from; so no depth costs more descriptors, and only heap
// memory (names still to remove) grows with it.
constexpr size_t kRemoveOpenDirs = 16;

// An iterative rm -rf that stays on one device: constant stack depth and a bounded number of
// descriptors however deep the tree (a hostile image can nest directories far deeper than
// PATH_MAX through symlinks), and symlinks are removed, never followed. Strict, it throws
// Error at the first entry it cannot remove; else it removes what it can (a mount point, an
// error is left, and the rest still goes).
class TreeRemover {
 public:
  TreeRemover(dev_t dev, bool strict) : dev_(dev), strict_(strict) {}
  ~TreeRemover() {
    for (auto& l : levels_) l.close();
  }
  TreeRemover(const TreeRemover&) = delete;
  TreeRemover& operator=(const TreeRemover&) = delete;

  // Empties the directory open as fd (st: its status; the remover owns fd from here) and
  // removes it as name under parent (AT_FDCWD: name is a path).
  void run(int parent, int fd, const struct stat& st, const std::string& name) {
    if (enter(fd, st, name) && !empty_all()) return;  // moved away meanwhile: stop there
    if (::unlinkat(parent, name.c_str(), AT_REMOVEDIR) != 0) failed("remove directory " + name);
  }

 private:
  struct Entry {
    std::string name;
    unsigned char type;  // d_type
  };
  // A directory being emptied.
  struct Level {
    DIR* dir;   // owns fd, unless fd was reopened through ".." (then null)
    int fd;     // -1 while closed
    dev_t dev;  // to recognize it when reopened
    ino_t ino;
    std::string name;  // in the level above (the top: the name given)
    size_t begin;      // its entries still to remove are pending_[begin..]
    void close() {
      if (dir)
        ::closedir(dir);
      else if (fd >= 0)
        ::close(fd);
      dir = nullptr;
      fd = -1;
    }
  };

  // Strict: throws Error("what: strerror(err)"). Else returns false, and the walk goes on.
  bool failed(const std::string& what, int err = errno) const {
    if (strict_) throw_errno(what, err);
    return false;
  }

  // Reads the directory open as fd (owned from here) and makes it the current level; false
  // (fd closed) if it cannot be read.
  bool enter(int fd, const struct stat& st, const std::string& name) {
    DIR* d = ::fdopendir(fd);
    if (!d) {
      int err = errno;
      ::close(fd);
      return failed("read directory " + name, err);
    }
    size_t begin = pending_.size();
    levels_.push_back({d, fd, st.st_dev, st.st_ino, name, begin});
    for (;;) {
      errno = 0;
      auto* e = ::readdir(d);
      if (!e) break;
      std::string_view n = e->d_name;
      if (n == "." || n == "..") continue;
      pending_.push_back({std::string(n), e->d_type});
    }
    if (errno != 0) failed("read directory " + name);
    if (levels_.size() - first_open_ > kRemoveOpenDirs) levels_[first_open_++].close();
    return true;
  }

  // Removes entries until the top level is empty and closed; false if the walk had to stop
  // (a directory to climb back into is no longer the one it came down from).
  bool empty_all() {
    while (!levels_.empty()) {
      Level& cur = levels_.back();
      if (pending_.size() > cur.begin) {
        Entry e = std::move(pending_.back());
        pending_.pop_back();
        remove_entry(cur.fd, e);
        continue;
      }
      if (levels_.size() > 1 && levels_[levels_.size() - 2].fd < 0 && !reopen_parent())
        return false;
      std::string name = std::move(cur.name);
      cur.close();
      levels_.pop_back();
      if (levels_.empty()) break;
      if (::unlinkat(levels_.back().fd, name.c_str(), AT_REMOVEDIR) != 0)
        failed("remove directory " + name);
    }
    first_open_ = 0;
    return true;
  }

  void remove_entry(int dirfd, const Entry& e) {
    const char* name = e.name.c_str();
    // d_type says what it is, with no stat: anything else is unlinked (EISDIR: a directory
    // after all, or replaced by one since)
    if (e.type != DT_DIR) {
      if (::unlinkat(dirfd, name, 0) == 0) return;
      if (errno != EISDIR) {
        failed("remove " + e.name);
        return;
      }
    }
    if (::unlinkat(dirfd, name, AT_REMOVEDIR) == 0) return;  // empty: nothing to walk
    if (errno != ENOTEMPTY && errno != EEXIST) {
      failed("remove directory " + e.name);  // a mount point (EBUSY), no permission
      return;
    }
    int fd = open_below(dirfd, name);
    if (fd < 0) {
      if (errno == ENOTDIR || errno == ELOOP) {
        // replaced by a file since; a symlink is removed, never followed
        if (::unlinkat(dirfd, name, 0) != 0) failed("remove " + e.name);
      } else if (errno != ENOENT) {
        failed("open directory " + e.name);
      }
      return;
    }
    struct stat st;
    if (::fstat(fd, &st) != 0 || st.st_dev != dev_) {  // a mount point: never descend
      ::close(fd);
      failed("directory " + e.name + " is on another filesystem", EXDEV);
      return;
    }
    enter(fd, st, e.name);
  }

  // Opens directory name under dirfd without following a symlink; if the process is out of
  // descriptors, gives back those of the highest open levels first.
  int open_below(int dirfd, const char* name) {
    for (;;) {
      int fd = ::openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
      if (fd >= 0 || (errno != EMFILE && errno != ENFILE) || first_open_ + 1 >= levels_.size())
        return fd;
      levels_[first_open_++].close();
    }
  }

  // Reopens the level above the current one (closed to bound the descriptors held) through
  // "..": only if it is still the directory the walk came down from.
  bool reopen_parent() {
    Level& up = levels_[levels_.size() - 2];
    UniqueFd fd(::openat(levels_.back().fd, "..", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!fd) return failed("reopen directory " + up.name);
    struct stat st;
    if (::fstat(fd.get(), &st) != 0) return failed("stat directory " + up.name);
    if (st.st_dev != up.dev || st.st_ino != up.ino)
      return failed(
          "directory " + levels_.back().name + " moved out of " + up.name + " while being removed",
          ESTALE);
    up.fd = fd.release();
    first_open_ = levels_.size() - 2;
    return true;
  }

  dev_t dev_;
  bool strict_;
  std::vector<Level> levels_;   // from the top directory down to the current one
  size_t first_open_ = 0;       // levels_[first_open_..] are open, the ones above closed
  std::vector<Entry> pending_;  // entries still to remove, the current level's last
};

}  // namespace

void remove_tree(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOTDIR || errno == ELOOP)
      ::unlink(path.c_str());  // not a directory; a symlink is removed, never followed
    else if (errno != ENOENT)
      ::rmdir(path.c_str());  // unreadable: tried anyway
    return;
  }
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    ::close(fd);
    return;
  }
  TreeRemover(st.st_dev, false).run(AT_FDCWD, fd, st, path);
}

void remove_tree_at(int dirfd, const std::string& name) {
  if (::unlinkat(dirfd, name.c_str(), AT_REMOVEDIR) == 0) return;
  if (errno != ENOTEMPTY && errno != EEXIST) throw_errno("remove directory " + name);
  int fd = ::openat(dirfd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) throw_errno("open directory " + name);
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    int err = errno;
    ::close(fd);
    throw_errno("stat directory " + name, err);
  }
  TreeRemover(st.st_dev, true).run(dirfd, fd, st, name);
}

namespace {

// Reads d to its end and closes it.
std::vector<std::string> read_names(DIR* d, const std::string& path) {
  std::vector<std::string> names;
  for (;;) {
    errno = 0;
    auto* e = ::readdir(d);
    if (!e) break;
    std::string_view n = e->d_name;
    if (n != "." && n != "..") names.emplace_back(n);
  }
  int err = errno;
  ::closedir(d);
  if (err) throw_errno("read directory " + path, err);
  return names;
}

}  // namespace

std::vector<std::string> dir_names(const std::string& path) {
  DIR* d = ::opendir(path.c_str());
  if (!d) {
    if (errno == ENOENT) return {};
    throw_errno("open directory " + path);
  }
  return read_names(d, path);
}

std::vector<std::string> dir_names_at(int dirfd, const std::string& path) {
  UniqueFd fd(::openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd) throw_errno("open directory " + path);
  DIR* d = ::fdopendir(fd.get());
  if (!d) throw_errno("open directory " + path);
  fd.release();  // d owns it
  return read_names(d, path);
}

void copy_file(const std::string& from, const std::string& to, const CopyOptions& o) {
  UniqueFd in(::open(from.c_str(), O_RDONLY | O_CLOEXEC | (o.follow_source ? 0 : O_NOFOLLOW)));
  if (!in) throw_errno("open " + from);
  UniqueFd out(::open(to.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600));
  if (!out) throw_errno("create " + to);
  int err = copy_all(in.get(), out.get()) ? 0 : errno;
  if (!err && ::fchmod(out.get(), o.mode) != 0) err = errno;
  if (!err && o.times && ::futimens(out.get(), o.times) != 0) err = errno;
  if (!err && ::close(out.release()) != 0) err = errno;
  if (err) throw_errno("copy " + from + " to " + to, err);
}

bool path_exists(const std::string& path) {
  struct stat st;
  return ::lstat(path.c_str(), &st) == 0;
}

std::string real_path(const std::string& p) {
  char buf[PATH_MAX];
  if (!::realpath(p.c_str(), buf)) return p;
  return buf;
}

bool is_mount_point(const std::string& path) {
  auto info = read_file_if_exists("/proc/self/mountinfo");
  if (!info) return false;
  std::string needle = " ";  // built in steps: GCC 12 warns (-Wrestrict) on " " + s + " "
  needle += real_path(path);
  needle += " ";
  return info->find(needle) != std::string::npos;
}

UniqueFd anonymous_file(const std::string& dir) {
  mkdir_p(dir, 0700);
  UniqueFd fd(::open(dir.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600));
  if (fd) return fd;
  if (errno != EOPNOTSUPP && errno != EISDIR && errno != EINVAL)
    throw_errno("create file in " + dir);
  std::string tmpl = dir + "/.racker-tmp-XXXXXX";
  fd.reset(::mkostemp(tmpl.data(), O_CLOEXEC));
  if (!fd) throw_errno("create file in " + dir);
  ::unlink(tmpl.c_str());
  return fd;
}

std::string clean_path(std::string_view path) {
  bool abs = !path.empty() && path[0] == '/';
  std::vector<std::string_view> parts;
  size_t i = 0;
  while (i < path.size()) {
    size_t j = path.find('/', i);
    if (j == std::string_view::npos) j = path.size();
    std::string_view p = path.substr(i, j - i);
    i = j + 1;
    if (p.empty() || p == ".") continue;
    if (p == "..") {
      if (!parts.empty() && parts.back() != "..")
        parts.pop_back();
      else if (!abs)
        parts.push_back(p);
      continue;
    }
    parts.push_back(p);
  }
  std::string out;
  if (abs) out.push_back('/');
  for (size_t k = 0; k < parts.size(); ++k) {
    if (k) out.push_back('/');
    out.append(parts[k]);
  }
  if (out.empty()) out.push_back('.');
  return out;
}

std::string join_under(const std::string& root, std::string_view path) {
  std::string abs;
  abs.reserve(path.size() + 1);
  abs.push_back('/');
  abs.append(path);
  std::string rel = clean_path(abs);
  if (rel == "/") return root;
  std::string out = root;
  if (!out.empty() && out.back() == '/') out.pop_back();
  out.append(rel);
  return out;
}

}  // namespace racker
