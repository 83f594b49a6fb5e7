// Pieces of the cgroup managers that are pure logic (parsing, path resolution, value
// conversions, the eBPF device filter), exposed so unit tests can check them without root.
// Nothing declared here writes to the host, except attach_device_filter().
#pragma once

#include <linux/bpf.h>

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "oci/spec.hpp"
#include "runtime/cgroups.hpp"
#include "runtime/systemd_bus.hpp"

namespace racker::runtime::cgroups_internal {

// One cgroup filesystem mount from /proc/self/mountinfo (one per hierarchy after dedup).
struct CgroupMount {
  std::string mount_point;
  std::string root;    // the cgroup mounted there ("/" unless a subtree is bind-mounted)
  std::string device;  // st_dev "major:minor": identifies the hierarchy
  bool v2 = false;
  std::vector<std::string> controllers;  // v1 only: "cpu", "cpuacct", "name=systemd", ...
};

// Cgroup mounts, one per hierarchy. A hierarchy mounted twice is reported once, preferring a
// mount under prefer_root whose root is "/".
std::vector<CgroupMount> parse_cgroup_mounts(std::string_view mountinfo,
                                             std::string_view prefer_root = "/sys/fs/cgroup");
// /proc/<pid>/cgroup as controller -> path; "" is the cgroup2 entry ("0::/path").
std::map<std::string, std::string> parse_proc_cgroup(std::string_view text);

// "machine-foo.slice" -> "/machine.slice/machine-foo.slice"; throws on an invalid name.
std::string expand_slice(const std::string& slice);
// "slice:prefix:name" -> "/slice.../prefix-name.scope"; nullopt when path is not in that form.
std::optional<std::string> systemd_to_cgroupfs(const std::string& path);
// linux.cgroupsPath as a cleaned cgroupfs path: absolute (below each hierarchy's root) or
// relative (below the caller's own cgroup). Empty means relative "<id>", as runc does.
std::string inner_path(const std::string& cgroups_path, const std::string& container_id);

// One container cgroup directory in one hierarchy.
struct CgroupDir {
  std::vector<std::string> controllers;  // v1 controllers of the hierarchy; empty for cgroup2
  std::string mount;                     // mount point of the hierarchy
  std::string path;                      // the container's cgroup directory
  std::vector<std::string> created;      // directories this manager made, outermost first
  bool has(std::string_view controller) const;
};

struct ResolvedCgroups {
  std::vector<CgroupDir> v1;
  std::optional<CgroupDir> unified;
};

// Where the container's cgroup lives in every hierarchy the layout uses. Relative paths go
// below the caller's cgroup (own) in v1 hierarchies and in the hybrid unified hierarchy; on
// pure v2 below its parent, like runc's fs2 (the caller's own cgroup holds processes, so
// controllers could not be enabled below it).
ResolvedCgroups resolve_cgroup_dirs(CgroupLayout layout, const std::vector<CgroupMount>& mounts,
                                    const std::map<std::string, std::string>& own,
                                    const std::string& inner,
                                    const std::string& mount_root = "/sys/fs/cgroup");

nlohmann::json dir_to_json(const CgroupDir& d);
CgroupDir dir_from_json(const nlohmann::json& j);

// cpu.shares (2..262144) -> cpu.weight (1..10000), runc's formula; 0 stays 0 (unset).
uint64_t shares_to_weight(uint64_t shares);
// blkio.weight (10..1000) -> io.weight (1..10000); 0 stays 0.
uint64_t blkio_weight_to_io_weight(uint64_t weight);
// OCI swap (memory+swap) -> memory.swap.max (swap only); -1 = "max". Throws on bad pairs.
int64_t swap_to_v2(int64_t swap, int64_t limit);
// cpu.max value; unset parts keep what `current` (the file's content) has.
std::string cpu_max_value(std::optional<int64_t> quota, std::optional<uint64_t> period,
                          std::string_view current);

// A v1 devices.allow / devices.deny line: "c 1:3 rwm", "c 136:* rwm", "a *:* rwm".
std::string device_rule_line(const oci::DeviceRule& rule);
// Devices every container gets after its own rules (runc's list plus /dev/console).
const std::vector<oci::DeviceRule>& default_device_rules();

// Kernel's name for a huge page size: 2048 kB -> "2MB", 1048576 kB -> "1GB", 64 -> "64KB".
std::string hugepage_name(uint64_t kib);
// Names of the huge page sizes under dir (default /sys/kernel/mm/hugepages).
std::vector<std::string> host_hugepage_names(const std::string& dir = "/sys/kernel/mm/hugepages");

// BPF_PROG_TYPE_CGROUP_DEVICE program for rules (last matching rule wins, default deny).
std::vector<bpf_insn> device_filter_program(const std::vector<oci::DeviceRule>& rules);
// Loads the program for rules and attaches it to the cgroup2 directory (BPF_F_ALLOW_MULTI),
// then detaches programs this directory had before. Throws racker::Error.
void attach_device_filter(const std::string& cgroup_dir, const std::vector<oci::DeviceRule>& rules);

// The cgroupfs manager of a layout over resolved directories. manage_ancestors: turn on the
// controllers the container needs in the cgroup.subtree_control of every ancestor (runc's
// cgroupfs driver); false where systemd owns the ancestors (the systemd driver).
std::unique_ptr<CgroupManager> make_cgroupfs_manager(CgroupLayout layout, std::vector<CgroupDir> v1,
                                                     std::optional<CgroupDir> unified,
                                                     bool manage_ancestors);

// The systemd driver (cgroups_systemd.cpp): a transient scope for "slice:prefix:name" (empty:
// "system.slice:racker:<id>"). Creates nothing until apply().
std::unique_ptr<CgroupManager> make_systemd_manager(const std::string& cgroups_path,
                                                    const std::string& container_id,
                                                    CgroupLayout layout,
                                                    const std::vector<CgroupMount>& mounts,
                                                    const std::map<std::string, std::string>& own,
                                                    const std::string& mount_root);
std::unique_ptr<CgroupManager> load_systemd_manager(const nlohmann::json& saved);
// The limits of res as unit properties (v2 names; on v1/hybrid only TasksMax, the cgroupfs
// writes set the rest). Throws racker::Error for values systemd cannot take.
std::vector<systemd::Property> limit_properties(bool v2, const oci::Resources& res);
// A new scope's properties: slice, delegation, accounting, then limit_properties(res).
std::vector<systemd::Property> scope_properties(const std::string& slice,
                                                const std::string& description, bool v2,
                                                const oci::Resources* res);

// The cgroup2 directory to join instead of a container's unified cgroup that holds no
// processes of its own because it has controllers enabled for its children (a booted
// systemd's): the init's own cgroup, when it is below container_dir. init_cgroup is the "0::"
// path of /proc/<init>/cgroup, mount_root the cgroup2 mount's root. nullopt if none fits.
std::optional<std::string> leaf_of_init(const std::string& container_dir,
                                        const std::string& mount_point,
                                        const std::string& mount_root,
                                        const std::string& init_cgroup);

// strerror, lower-cased to match the project's messages.
std::string errno_text(int err);

}  // namespace racker::runtime::cgroups_internal
