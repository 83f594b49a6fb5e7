// The cgroup file writers the manager backends (cgroups.cpp) share: each turns one part of
// linux.resources into writes to a container cgroup directory and throws racker::Error naming
// the config field and the file. Unlike cgroups_internal.hpp, everything here touches the host.
// Defined in cgroups_writers.cpp, except v1_devices and with_default_devices (cgroups_devices.cpp).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "oci/spec.hpp"
#include "runtime/cgroups_internal.hpp"

namespace racker::runtime::cgroups_internal {

// --- host helpers ---------------------------------------------------------------------------

// Writes value to an existing cgroup file; returns 0 or the errno.
int write_raw(const std::string& path, std::string_view value) noexcept;
// Writes value, or throws "FIELD: write PATH: reason".
void write_knob(std::string_view field, const std::string& path, std::string_view value);

std::string str(int64_t v);
std::string str(uint64_t v);

// The config.json path of a resource field, e.g. linux.resources.memory.limit.
std::string field(std::string_view rest);

// Is a value a configured v1-style "set" (runc treats 0 as unset for these)?
template <typename T>
bool set_nonzero(const std::optional<T>& v) {
  return v && *v != 0;
}

// The controllers listed in dir/cgroup.controllers.
std::vector<std::string> controllers_of(const std::string& dir);
// Polls done() until it holds; throws "WHAT: timed out" once limit has passed.
void wait_until(const std::string& what, const std::function<bool()>& done,
                std::chrono::milliseconds limit);
// Whether key in dir/cgroup.events is "1" (want true) or not (want false); false if absent.
bool v2_events_flag(const std::string& dir, std::string_view key, bool want);

// --- v1 writers -----------------------------------------------------------------------------

void v1_memory(const CgroupDir& d, const oci::MemoryResources& m, bool updating);
void v1_cpu(const CgroupDir& d, const oci::CpuResources& c);
// Copies cpuset.cpus/mems down from the parent into every new level of d's path.
void v1_cpuset_inherit(const CgroupDir& d);
void v1_cpuset(const CgroupDir& d, const oci::CpuResources& c);
// pids.max value for linux.resources.pids.limit (0 or less: "max").
std::string pids_max(int64_t limit);
void v1_blkio(const CgroupDir& d, const oci::BlockIoResources& b);
// Denies everything, then writes rules and the default rules (best effort) to devices.allow/deny.
void v1_devices(const CgroupDir& d, const std::vector<oci::DeviceRule>& rules);
void v1_freeze(const std::string& dir, bool freeze);

// --- v2 writers -----------------------------------------------------------------------------

void v2_memory(const CgroupDir& d, const oci::MemoryResources& m, bool updating);
void v2_cpu(const CgroupDir& d, const oci::CpuResources& c);
void v2_io(const CgroupDir& d, const oci::BlockIoResources& b);
// linux.resources.unified: each key is a file name in d.
void write_unified(const CgroupDir& d, const std::map<std::string, std::string>& unified);
// Turns on wanted controllers in cgroup.subtree_control from the root down to d's parent.
void enable_controllers(const CgroupDir& d, const std::vector<std::string>& wanted);
void v2_freeze(const std::string& dir, bool freeze);

// --- both -----------------------------------------------------------------------------------

// hugetlb.<size>.<suffix> (v1: "limit_in_bytes", v2: "max") and its reservation counter.
void write_hugetlb(const std::string& dir, const std::vector<oci::HugepageLimit>& limits,
                   const char* suffix, const char* rsvd_suffix);
// rules followed by default_device_rules().
std::vector<oci::DeviceRule> with_default_devices(const std::vector<oci::DeviceRule>& rules);

}  // namespace racker::runtime::cgroups_internal
