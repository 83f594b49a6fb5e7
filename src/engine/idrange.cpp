#include "engine/idrange.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <memory>
#include <set>
#include <utility>

#include "base/error.hpp"
#include "base/fd.hpp"
#include "base/file_lock.hpp"
#include "base/fs.hpp"
#include "base/log.hpp"
#include "base/strings.hpp"

namespace racker::engine {
namespace {

struct Line {
  std::string name;
  uint64_t start = 0, count = 0;
};

std::vector<Line> parse_lines(const std::string& text) {
  std::vector<Line> out;
  for (auto& raw : split(text, '\n')) {
    std::string line = trim(raw);
    if (line.empty() || line[0] == '#') continue;
    auto f = split(line, ':');
    if (f.size() != 3) continue;
    auto s = parse_uint(f[1]), c = parse_uint(f[2]);
    if (!s || !c || *c == 0) continue;
    out.push_back({f[0], *s, *c});
  }
  return out;
}

// The ranges of kSubidUser in etc/<file>, the file extended (or created) with a free one when
// it has none.
std::vector<SubidRange> ranges_of(const std::string& etc, const std::string& file) {
  std::string path = etc + "/" + file;
  std::string text = read_file_if_exists(path).value_or("");
  auto ranges = subid_ranges(text, kSubidUser);
  if (!ranges.empty()) return ranges;
  SubidRange r = free_subid_range(text, 2147483648ULL);
  if (r.count < kRangeSize)
    throw Error(path + ": no room for the subordinate ids of user \"" + kSubidUser + "\"", ENOSPC);
  if (!text.empty() && text.back() != '\n') text += "\n";
  text += std::string(kSubidUser) + ":" + std::to_string(r.start) + ":" + std::to_string(r.count) +
          "\n";
  write_file_atomic(path, text, 0644);
  log::info("added subordinate ids " + std::to_string(r.start) + "-" +
            std::to_string(r.start + r.count - 1) + " for user \"" + kSubidUser + "\" to " + path);
  return {r};
}

// The blocks of kRangeSize ids in ranges, as their first ids.
std::vector<uint32_t> blocks_of(const std::vector<SubidRange>& ranges) {
  std::vector<uint32_t> out;
  for (auto& r : ranges)
    for (uint64_t b = r.start;
         b + kRangeSize <= r.start + r.count && b + kRangeSize <= 4294967295ULL; b += kRangeSize)
      out.push_back(static_cast<uint32_t>(b));
  return out;
}

std::string lease_path(const std::string& root, uint32_t uid) {
  return root + "/" + std::to_string(uid);
}

}  // namespace

std::vector<SubidRange> subid_ranges(const std::string& text, const std::string& user) {
  std::vector<SubidRange> out;
  for (auto& l : parse_lines(text))
    if (l.name == user && l.start <= 4294967294ULL)
      out.push_back(
          {static_cast<uint32_t>(l.start), std::min<uint64_t>(l.count, 4294967295ULL - l.start)});
  return out;
}

SubidRange free_subid_range(const std::string& text, uint64_t count) {
  auto lines = parse_lines(text);
  auto overlaps = [&](uint64_t start) {
    for (auto& l : lines)
      if (start < l.start + l.count && l.start < start + count) return true;
    return false;
  };
  uint64_t start = 2147483648ULL;
  if (overlaps(start)) {
    start = 100000;
    for (auto& l : lines) start = std::max(start, l.start + l.count);
  }
  uint64_t room = start < 4294967295ULL ? 4294967295ULL - start : 0;
  return {static_cast<uint32_t>(std::min<uint64_t>(start, 4294967295ULL)), std::min(count, room)};
}

std::string ids_root(const std::string& state_root) {
  std::string s = state_root;
  while (s.size() > 1 && s.back() == '/') s.pop_back();
  return s + "-userns";
}

IdRange lease_range(const std::string& state_root, const std::string& owner_dir,
                    const std::string& etc) {
  std::string root = ids_root(state_root);
  mkdir_p(root, 0700);
  FileLock lock(root + "/lock");
  auto uids = blocks_of(ranges_of(etc, "subuid"));
  auto gids = blocks_of(ranges_of(etc, "subgid"));
  size_t n = std::min(uids.size(), gids.size());
  for (size_t i = 0; i < n; ++i) {
    std::string path = lease_path(root, uids[i]);
    if (auto holder = read_file_if_exists(path)) {
      if (!holder->empty() && path_exists(*holder)) continue;
      ::unlink(path.c_str());  // its container is gone
    }
    UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
    if (!fd) throw_errno("lease " + path);
    if (!write_all(fd.get(), owner_dir.data(), owner_dir.size())) {
      int e = errno;
      ::unlink(path.c_str());
      throw_errno("lease " + path, e);
    }
    return {uids[i], gids[i], kRangeSize};
  }
  throw Error("--userns=auto: all " + std::to_string(n) + " id ranges of user \"" + kSubidUser +
                  "\" in " + etc + "/subuid and subgid are in use",
              ENOSPC);
}

void release_range(const std::string& state_root, const IdRange& range,
                   const std::string& owner_dir) noexcept {
  try {
    std::string root = ids_root(state_root);
    if (!path_exists(root)) return;
    FileLock lock(root + "/lock");
    std::string path = lease_path(root, range.uid);
    if (read_file_if_exists(path) == owner_dir) ::unlink(path.c_str());
  } catch (const std::exception& e) {
    log::debug(std::string("release id range: ") + e.what());
  }
}

namespace {
void shift_owners_in(const std::string& dir, const IdRange& range, bool to_root,
                     std::set<std::pair<dev_t, ino_t>>& linked) {
  struct stat st;
  if (::lstat(dir.c_str(), &st) != 0) throw_errno("stat " + dir);
  if (!S_ISDIR(st.st_mode) && st.st_nlink > 1 && !linked.insert({st.st_dev, st.st_ino}).second)
    return;  // a hard link to a file shifted already
  uid_t uid = range.uid + (to_root ? 0 : st.st_uid);
  gid_t gid = range.gid + (to_root ? 0 : st.st_gid);
  if (::lchown(dir.c_str(), uid, gid) != 0) throw_errno("chown " + dir);
  // chown clears set-id bits: put them back
  if (!S_ISLNK(st.st_mode) && (st.st_mode & 06000) && ::chmod(dir.c_str(), st.st_mode & 07777) != 0)
    throw_errno("chmod " + dir);
  if (!S_ISDIR(st.st_mode)) return;
  for (auto& name : dir_names(dir)) shift_owners_in(dir + "/" + name, range, to_root, linked);
}
}  // namespace

void shift_owners(const std::string& dir, const IdRange& range, bool to_root) {
  std::set<std::pair<dev_t, ino_t>> linked;
  shift_owners_in(dir, range, to_root, linked);
}

}  // namespace racker::engine
