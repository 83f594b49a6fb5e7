// Mounts inside the container: option parsing (shared with validation, so bad options fail
// at create time), path resolution that never leaves the rootfs, and the rootfs setup the
// container init performs in its own mount namespace.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <vector>

#include "base/fd.hpp"
#include "oci/spec.hpp"

namespace racker::runtime {

struct MountOptions {
  unsigned long flags = 0;        // MS_* set
  unsigned long clear = 0;        // MS_* explicitly cleared (rw, suid, ...)
  unsigned long propagation = 0;  // MS_SHARED/MS_SLAVE/MS_PRIVATE/MS_UNBINDABLE (+MS_REC)
  uint64_t attr_set = 0;          // MOUNT_ATTR_* for recursive options (rro, rnosuid, ...)
  uint64_t attr_clr = 0;
  bool bind = false;
  bool recursive_bind = false;
  bool copy_up = false;  // tmpcopyup: a tmpfs starts with what its destination held
  bool idmap = false;    // "idmap"/"ridmap": an id-mapped bind mount (ridmap: recursively)
  std::string data;      // comma-separated filesystem options (mode=, size=, newinstance, ...)
};

// Parses a mount's options. Throws racker::Error naming "mounts[i].options[j]" for options
// the runtime does not know.
MountOptions parse_mount_options(const oci::Mount& m, const std::string& where);

// Propagation flags for linux.rootfsPropagation ("" -> 0).
unsigned long propagation_flags(const std::string& name);

// Resolves `path` inside `root` following symlinks as if root were "/": the result is always
// below root. Components that do not exist are appended lexically.
std::string secure_join(const std::string& root, const std::string& path);

// Bind mount sources the container init may not reach by path (a user namespace whose root
// is not host root cannot search root's 0700 directories), and id-mapped mounts, which only
// host root may make: detached copies made by the runtime before the init starts (clone_tree),
// one per mounts[] entry, invalid where the init mounts by path. in_new_userns: the init will
// run in a user namespace the runtime creates; container_uid/gid_mappings are its mappings
// (an "idmap" mount without mappings of its own uses them). Throws racker::Error naming the
// mount.
std::vector<UniqueFd> open_mount_sources(const oci::Spec& spec, bool in_new_userns);

struct RootfsPlan {
  const oci::Spec* spec = nullptr;
  std::string rootfs;       // the path the init uses (may be /proc/self/cwd/NAME)
  std::string rootfs_host;  // the absolute host path (as /proc/self/mountinfo shows it)
  const std::vector<UniqueFd>* sources = nullptr;  // open_mount_sources, by mounts[] index
  bool no_pivot = false;
  bool in_user_ns = false;     // created or joined: mknod is not allowed, bind devices instead
  bool new_cgroup_ns = false;  // cgroup mounts become real cgroupfs mounts
  bool have_console = false;   // process.terminal
};

// Runs in the container init. Sets up every mount, device and the pivot_root. Throws
// racker::Error (caught by the init and reported to the parent).
void prepare_rootfs(const RootfsPlan& plan);
// pivot_root (or chroot for --no-pivot) and the propagation of the new "/".
void finalize_rootfs(const RootfsPlan& plan);
// After sysctls are written: masked and readonly paths, then the readonly root.
void protect_paths(const RootfsPlan& plan);
// Binds the pty slave at /dev/console (after pivot_root).
void setup_console(const std::string& slave_path);

}  // namespace racker::runtime
