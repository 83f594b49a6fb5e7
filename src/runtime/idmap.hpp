// User namespaces and id-mapped mounts, done from the host side (as root): a user namespace
// made only to carry a mapping (mount_setattr(MOUNT_ATTR_IDMAP) takes one), detached
// id-mapped or plain copies of a tree (open_tree(OPEN_TREE_CLONE)), which a container init
// inside its own user namespace attaches with move_mount even where it could not reach the
// source by path, and the credentials switch that makes a new user namespace belong to the
// container's own host uid instead of root.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <vector>

#include "base/fd.hpp"
#include "base/ids.hpp"
#include "oci/spec.hpp"

namespace racker::runtime {

// The host id that container id 0 maps to; nullopt when 0 is not mapped.
std::optional<uint32_t> host_id_of_root(const std::vector<oci::IdMapping>& mappings);
// "CONTAINER HOST SIZE\n" lines, as /proc/PID/uid_map takes them.
std::string mapping_text(const std::vector<oci::IdMapping>& mappings);

// Writes the uid and gid maps of the user namespace process pid created. Root writes them
// directly. Without root, a mapping of the caller's own uid and gid alone is written directly
// too (setgroups is denied first, as the kernel requires); anything wider goes through the
// setuid helpers newuidmap/newgidmap (Debian's uidmap), which check /etc/subuid and
// /etc/subgid. Throws racker::Error with a line that says what to install or configure.
void write_id_maps(pid_t pid, const std::vector<oci::IdMapping>& uid_mappings,
                   const std::vector<oci::IdMapping>& gid_mappings);

// A user namespace with these mappings, held by the returned fd (a throwaway child creates
// it, the caller, root, writes its maps). Throws racker::Error.
UniqueFd make_userns(const std::vector<oci::IdMapping>& uid_mappings,
                     const std::vector<oci::IdMapping>& gid_mappings);

// A detached copy of the tree at path (recursive: with the mounts below it), id-mapped
// through userns_fd when it is >= 0: a file owned by id C on disk shows as owned by H where
// the namespace maps C to H. Throws racker::Error; errno EINVAL/EPERM/ENOSYS/EOPNOTSUPP from
// the id mapping mean the kernel or the filesystem does not support it.
UniqueFd clone_tree(const std::string& path, bool recursive, int userns_fd = -1);

// Attaches a detached tree (clone_tree) at target. Throws racker::Error.
void attach_tree(int tree_fd, const std::string& target);

// Switches the calling thread's effective uid and gid (raw syscalls: this thread only) for
// as long as it lives: a user namespace created meanwhile is owned by uid. Real and saved ids
// stay 0, so the destructor can switch back; it also restores the process' dumpable flag,
// which a change of effective uid clears.
class EffectiveIds {
 public:
  EffectiveIds(uid_t uid, gid_t gid);
  ~EffectiveIds();
  EffectiveIds(const EffectiveIds&) = delete;
  EffectiveIds& operator=(const EffectiveIds&) = delete;

 private:
  int dumpable_ = 1;
};

}  // namespace racker::runtime
