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
  std::string cur;
  size_t i = 0;
  while (i <= path.size()) {
    size_t j = path.find('/', i);
    if (j == std::string::npos) j = path.size();
    cur = path.substr(0, j);
    i = j + 1;
    if (cur.empty()) continue;
    if (::mkdir(cur.c_str(), mode) != 0 && errno != EEXIST) throw_errno("mkdir " + cur);
  }
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) throw_errno("stat " + path);
  if (!S_ISDIR(st.st_mode)) throw Error("mkdir " + path + ": not a directory", ENOTDIR);
}

static void remove_at(int dirfd, const char* name, dev_t dev) {
  struct stat st;
  if (::fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) != 0) return;
  if (S_ISDIR(st.st_mode)) {
    if (st.st_dev != dev) return;  // a mount point: never descend
    int fd = ::openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd >= 0) {
      DIR* d = ::fdopendir(fd);
      if (d) {
        std::vector<std::string> names;
        while (auto* e = ::readdir(d)) {
          std::string_view n = e->d_name;
          if (n == "." || n == "..") continue;
          names.emplace_back(n);
        }
        for (auto& n : names) remove_at(::dirfd(d), n.c_str(), dev);
        ::closedir(d);
      } else {
        ::close(fd);
      }
    }
    ::unlinkat(dirfd, name, AT_REMOVEDIR);
  } else {
    ::unlinkat(dirfd, name, 0);
  }
}

void remove_tree(const std::string& path) {
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0) return;
  remove_at(AT_FDCWD, path.c_str(), st.st_dev);
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
