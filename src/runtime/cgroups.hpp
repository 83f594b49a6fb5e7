// cgroups: one interface over the three host layouts (pure v1, pure v2, and hybrid: v1
// controllers plus a cgroup2 mount at /sys/fs/cgroup/unified). Picked at run time by looking
// at /sys/fs/cgroup. On a host whose PID 1 is systemd, the systemd driver (a transient scope
// with delegation) places containers instead; a host without systemd is normal, and there the
// systemd driver falls back to cgroupfs at the path systemd would have used.
#pragma once

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "oci/spec.hpp"

namespace racker::runtime {

enum class CgroupLayout { v1, v2, hybrid };

// Detects the layout of /sys/fs/cgroup (or of `mount_root` in tests).
CgroupLayout detect_cgroup_layout(const std::string& mount_root = "/sys/fs/cgroup");

// Device-cgroup rules granting "rwm" on each of linux.devices, for the caller to append to
// linux.resources.devices before apply() (runc does the same). FIFOs need no rule.
std::vector<oci::DeviceRule> device_rules_for(const std::vector<oci::Device>& devices);

// Where an absolute or systemd-style linux.cgroupsPath puts the container below each
// hierarchy's root: "/racker/ID" stays, "machine.slice:racker:ID" is
// "/machine.slice/racker-ID.scope" (where systemd creates that scope).
std::string cgroup_path_below_root(const std::string& cgroups_path);

class CgroupManager {
 public:
  virtual ~CgroupManager() = default;

  // cgroups_path is linux.cgroupsPath: absolute = below each hierarchy's root; relative =
  // below the caller's own cgroup; empty = relative "<id>" (what runc's cgroupfs driver does).
  // "slice:prefix:name" (systemd syntax) is mapped to the cgroupfs path systemd would use,
  // e.g. "system.slice:racker:id" -> "/system.slice/racker-id.scope". Reads /proc/self/* and
  // /sys/fs/cgroup but creates nothing. Throws racker::Error.
  // systemd: the systemd driver (runc's --systemd-cgroup) where systemd runs.
  static std::unique_ptr<CgroupManager> create(const std::string& cgroups_path,
                                               const std::string& container_id,
                                               bool systemd = false);
  // Rebuilds a manager from what save() returned (stored in the container's state).
  static std::unique_ptr<CgroupManager> load(const nlohmann::json& saved);
  virtual nlohmann::json save() const = 0;

  // Checks resources against what the host offers; throws racker::Error naming the field
  // (e.g. "linux.resources.hugepageLimits: no hugetlb controller on this host").
  virtual void validate(const oci::Resources& res) const = 0;
  // Creates the cgroup(s), applies res (may be null), and moves pid in. The device rules
  // always get the runtime's defaults appended (deny everything else). Throws racker::Error;
  // call destroy() afterwards to remove what was created.
  virtual void apply(pid_t pid, const oci::Resources* res) = 0;
  // Moves another process (exec) into the container's cgroup(s). Where the container's
  // unified cgroup may not hold processes (a booted systemd enabled controllers below it:
  // cgroup v2's no-internal-processes rule), pid joins init_pid's own cgroup inside it.
  virtual void add_process(pid_t pid, pid_t init_pid = 0) = 0;
  // Applies new limits to an existing cgroup (`update`).
  virtual void update(const oci::Resources& res) = 0;
  virtual void freeze() = 0;
  virtual void thaw() = 0;
  virtual bool frozen() const = 0;
  // Every pid in the container's cgroup (recursively).
  virtual std::vector<pid_t> pids() const = 0;
  // Kills what is left in cgroups this manager created and removes the directories it
  // created (retrying while the kernel still drains them); pre-existing ones stay. Never throws.
  virtual void destroy() noexcept = 0;
  // Hands the container's cgroup to the root of its user namespace (host uid/gid), so that a
  // booted systemd can make its sub-cgroups: the directory and the files that move processes
  // and enable controllers (cgroup v2's delegation set, /sys/kernel/cgroup/delegate), never
  // its own limits; in v1 only the named systemd hierarchy (no limits there). Throws.
  virtual void delegate(uid_t uid, gid_t gid) = 0;
  // Path of the container cgroup in the unified hierarchy (v2/hybrid), for cgroupns; "" if none.
  virtual std::string unified_path() const = 0;
};

}  // namespace racker::runtime
