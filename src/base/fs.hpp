#pragma once

#include <sys/types.h>
#include <time.h>

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/fd.hpp"

namespace racker {

// Reads a whole file; throws Error naming the path.
std::string read_file(const std::string& path);
// Reads a whole file if it exists; nullopt when it does not.
std::optional<std::string> read_file_if_exists(const std::string& path);
// Writes data to path.tmp then renames it over path, so readers see old or new, never half.
void write_file_atomic(const std::string& path, std::string_view data, mode_t mode = 0644);
// Writes data to an existing file (e.g. a cgroup or /proc knob); throws Error naming it.
void write_file(const std::string& path, std::string_view data);
// mkdir -p; throws on failure.
void mkdir_p(const std::string& path, mode_t mode = 0755);
// rm -rf that never crosses into another filesystem (stays on the device of path). Best
// effort: what cannot be removed stays, the rest goes.
void remove_tree(const std::string& path);
// rm -rf of directory name under dirfd, never following symlinks, on one filesystem, with
// constant stack and at most 16 descriptors however deep the tree. Throws Error naming the
// first entry it cannot remove.
void remove_tree_at(int dirfd, const std::string& name);
bool path_exists(const std::string& path);
// The names in directory path but "." and "..", in readdir order; none when path does not
// exist. Throws Error naming path when it cannot be read.
std::vector<std::string> dir_names(const std::string& path);
// The same for the directory open as dirfd (path: its name for errors); dirfd stays as it is.
std::vector<std::string> dir_names_at(int dirfd, const std::string& path);

struct CopyOptions {
  mode_t mode = 0644;
  bool follow_source = true;               // false: a symlink at from is refused (ELOOP)
  const struct timespec* times = nullptr;  // atime and mtime to give the copy
};
// Copies the regular file from into to (created or truncated, never through a symlink at to)
// with o.mode and o.times. Throws Error naming both paths.
void copy_file(const std::string& from, const std::string& to, const CopyOptions& o);
// Lexically cleans a path: collapses "//", ".", and "..", keeping it absolute if it was.
std::string clean_path(std::string_view path);
// realpath(3), or p itself when it cannot be resolved.
std::string real_path(const std::string& p);
// Whether path (resolved with real_path) is a mount point listed in /proc/self/mountinfo.
bool is_mount_point(const std::string& path);
// An unnamed file in dir (O_TMPFILE, else a file unlinked at once), gone when closed: for
// spooling streams. dir is created (0700) if missing.
UniqueFd anonymous_file(const std::string& dir);
// Joins root and an absolute or relative path lexically, never climbing above root.
std::string join_under(const std::string& root, std::string_view path);

}  // namespace racker
