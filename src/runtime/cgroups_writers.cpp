// Writing linux.resources into cgroup files: the v1 knobs (memory, cpu, cpuset, pids, blkio,
// hugetlb), their cgroup v2 counterparts plus linux.resources.unified, freezing, and the small
// helpers that read and write cgroup files. Which writer serves which backend, and the checks
// before writing, belong to the managers (cgroups.cpp). Devices are in cgroups_devices.cpp.
#include "runtime/cgroups_writers.hpp"

#include <dirent.h>
#include <fcntl.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <thread>

#include "base/error.hpp"
#include "base/fd.hpp"
#include "base/fs.hpp"
#include "base/log.hpp"
#include "base/strings.hpp"

namespace racker::runtime::cgroups_internal {

std::string errno_text(int err) {
  std::string s = std::strerror(err);
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// --- values ---------------------------------------------------------------------------------

uint64_t shares_to_weight(uint64_t shares) {
  if (shares == 0) return 0;
  if (shares < 2) shares = 2;
  return 1 + ((shares - 2) * 9999) / 262142;
}

uint64_t blkio_weight_to_io_weight(uint64_t weight) {
  if (weight == 0) return 0;
  if (weight < 10) weight = 10;
  return 1 + (weight - 10) * 9999 / 990;
}

int64_t swap_to_v2(int64_t swap, int64_t limit) {
  // Like cgroup v1: memory unlimited and swap unset means "both unlimited".
  if (limit == -1 && swap == 0) return -1;
  if (swap == -1 || swap == 0) return swap;
  if (limit == 0 || limit == -1)
    throw Error("a swap limit needs a memory limit (memory.limit)", EINVAL);
  if (limit < 0) throw Error("invalid memory limit " + std::to_string(limit), EINVAL);
  if (swap < limit)
    throw Error("memory+swap limit " + std::to_string(swap) + " is below the memory limit " +
                    std::to_string(limit),
                EINVAL);
  return swap - limit;
}

std::string cpu_max_value(std::optional<int64_t> quota, std::optional<uint64_t> period,
                          std::string_view current) {
  auto cur = split(trim(current), ' ');
  std::string q = !cur.empty() && !cur[0].empty() ? cur[0] : "max";
  std::string p = cur.size() > 1 ? cur[1] : "100000";
  if (quota) q = *quota > 0 ? std::to_string(*quota) : "max";
  if (period) p = std::to_string(*period);
  return q + " " + p;
}

std::string hugepage_name(uint64_t kib) {
  // The kernel's mem_fmt(): whole GB, MB or KB, rounding down.
  if (kib >= 1024 * 1024) return std::to_string(kib / (1024 * 1024)) + "GB";
  if (kib >= 1024) return std::to_string(kib / 1024) + "MB";
  return std::to_string(kib) + "KB";
}

std::vector<std::string> host_hugepage_names(const std::string& dir) {
  std::vector<std::string> out;
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return out;
  while (auto* e = ::readdir(d)) {
    std::string_view n = e->d_name;
    if (!starts_with(n, "hugepages-") || n.size() < 13 || n.substr(n.size() - 2) != "kB") continue;
    if (auto kib = parse_uint(n.substr(10, n.size() - 12))) out.push_back(hugepage_name(*kib));
  }
  ::closedir(d);
  std::sort(out.begin(), out.end());
  return out;
}

// --- host helpers ---------------------------------------------------------------------------

namespace {

std::string read_knob(const std::string& path) {
  try {
    return trim(read_file(path));
  } catch (const Error& e) {
    throw Error("read " + path + ": " + errno_text(e.err() ? e.err() : EIO), e.err());
  }
}

std::vector<std::string> words(const std::string& s) {
  std::vector<std::string> out;
  for (auto& w : split(s, ' '))
    for (auto& x : split(trim(w), '\n'))
      if (!trim(x).empty()) out.push_back(trim(x));
  return out;
}

}  // namespace

int write_raw(const std::string& path, std::string_view value) noexcept {
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CLOEXEC));
  if (!fd) return errno;
  if (!write_all(fd.get(), value.data(), value.size())) return errno;
  return 0;
}

void write_knob(std::string_view field, const std::string& path, std::string_view value) {
  if (int err = write_raw(path, value))
    throw Error(std::string(field) + ": write " + path + ": " + errno_text(err), err);
}

std::string str(int64_t v) {
  return std::to_string(v);
}
std::string str(uint64_t v) {
  return std::to_string(v);
}

std::string field(std::string_view rest) {
  return "linux.resources." + std::string(rest);
}

std::vector<std::string> controllers_of(const std::string& dir) {
  return words(read_file_if_exists(dir + "/cgroup.controllers").value_or(""));
}

void wait_until(const std::string& what, const std::function<bool()>& done,
                std::chrono::milliseconds limit) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (!done()) {
    if (std::chrono::steady_clock::now() > deadline) throw Error(what + ": timed out", ETIMEDOUT);
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

bool v2_events_flag(const std::string& dir, std::string_view key, bool want) {
  auto ev = read_file_if_exists(dir + "/cgroup.events").value_or("");
  for (auto& line : split(ev, '\n')) {
    auto w = words(line);
    if (w.size() == 2 && w[0] == key) return (w[1] == "1") == want;
  }
  return false;
}

// --- v1 writers -----------------------------------------------------------------------------

void v1_memory(const CgroupDir& d, const oci::MemoryResources& m, bool updating) {
  auto f = [&](const char* name) { return d.path + "/" + name; };
  std::optional<int64_t> limit = m.limit, swap = m.swap;
  const bool have_memsw = path_exists(f("memory.memsw.limit_in_bytes"));
  if (limit && *limit == -1 && !swap && have_memsw) swap = -1;
  if (swap && !have_memsw) {
    if (*swap != -1 && *swap != 0)
      throw Error(field("memory.swap") + ": " + f("memory.memsw.limit_in_bytes") +
                      " does not exist (swap accounting is off on this host)",
                  ENOENT);
    swap.reset();
  }
  if (updating && m.check_before_update.value_or(false) && limit && *limit > 0) {
    auto usage = parse_uint(read_knob(f("memory.usage_in_bytes")));
    if (usage && *usage > static_cast<uint64_t>(*limit))
      throw Error(field("memory.limit") + ": " + str(*limit) + " is below the current usage " +
                      str(*usage) + " of " + d.path,
                  EBUSY);
  }
  auto write_limit = [&] {
    if (limit) write_knob(field("memory.limit"), f("memory.limit_in_bytes"), str(*limit));
  };
  auto write_swap = [&] {
    if (swap) write_knob(field("memory.swap"), f("memory.memsw.limit_in_bytes"), str(*swap));
  };
  // memory.limit_in_bytes may never exceed memsw.limit_in_bytes, so when the new memsw is
  // above the current memory limit it goes first; otherwise memory goes first (runc's order).
  bool swap_first = false;
  if (limit && swap) {
    auto cur = parse_uint(read_knob(f("memory.limit_in_bytes")));
    swap_first = *swap == -1 || (cur && *cur < static_cast<uint64_t>(*swap));
  }
  if (swap_first) {
    write_swap();
    write_limit();
  } else {
    write_limit();
    write_swap();
  }
  if (m.reservation)
    write_knob(field("memory.reservation"), f("memory.soft_limit_in_bytes"), str(*m.reservation));
  if (m.kernel) {
    // Kernels since 5.16 accept and ignore (or reject) kmem limits; that is not worth failing a
    // container for, but anything else is.
    if (!path_exists(f("memory.kmem.limit_in_bytes"))) {
      log::debug(field("memory.kernel") +
                 ": no memory.kmem.limit_in_bytes on this kernel; ignored");
    } else if (int err = write_raw(f("memory.kmem.limit_in_bytes"), str(*m.kernel))) {
      if (err != EOPNOTSUPP && err != EINVAL)
        throw Error(field("memory.kernel") + ": write " + f("memory.kmem.limit_in_bytes") + ": " +
                        errno_text(err),
                    err);
      log::debug(field("memory.kernel") + ": kernel refused a kmem limit (" + errno_text(err) +
                 "); ignored");
    }
  }
  if (m.kernel_tcp)
    write_knob(field("memory.kernelTCP"), f("memory.kmem.tcp.limit_in_bytes"), str(*m.kernel_tcp));
  if (m.swappiness)
    write_knob(field("memory.swappiness"), f("memory.swappiness"), str(*m.swappiness));
  if (m.disable_oom_killer)
    write_knob(field("memory.disableOOMKiller"), f("memory.oom_control"),
               *m.disable_oom_killer ? "1" : "0");
  if (m.use_hierarchy)
    write_knob(field("memory.useHierarchy"), f("memory.use_hierarchy"),
               *m.use_hierarchy ? "1" : "0");
}

void v1_cpu(const CgroupDir& d, const oci::CpuResources& c) {
  auto f = [&](const char* name) { return d.path + "/" + name; };
  if (set_nonzero(c.shares)) {
    write_knob(field("cpu.shares"), f("cpu.shares"), str(*c.shares));
    auto got = parse_uint(read_knob(f("cpu.shares")));
    if (got && *got != *c.shares)
      throw Error(field("cpu.shares") + ": the kernel clamped " + str(*c.shares) + " to " +
                      str(*got) + " (allowed: 2 to 262144)",
                  EINVAL);
  }
  // A smaller period can be refused while the old quota/period ratio exceeds the parent's;
  // then it is retried after the quota.
  bool period_pending = false;
  if (set_nonzero(c.period)) {
    int err = write_raw(f("cpu.cfs_period_us"), str(*c.period));
    if (err == EINVAL && set_nonzero(c.quota))
      period_pending = true;
    else if (err)
      throw Error(
          field("cpu.period") + ": write " + f("cpu.cfs_period_us") + ": " + errno_text(err), err);
  }
  if (set_nonzero(c.quota)) write_knob(field("cpu.quota"), f("cpu.cfs_quota_us"), str(*c.quota));
  if (period_pending) write_knob(field("cpu.period"), f("cpu.cfs_period_us"), str(*c.period));
  if (c.burst) write_knob(field("cpu.burst"), f("cpu.cfs_burst_us"), str(*c.burst));
  if (set_nonzero(c.realtime_period))
    write_knob(field("cpu.realtimePeriod"), f("cpu.rt_period_us"), str(*c.realtime_period));
  if (set_nonzero(c.realtime_runtime))
    write_knob(field("cpu.realtimeRuntime"), f("cpu.rt_runtime_us"), str(*c.realtime_runtime));
  if (c.idle) write_knob(field("cpu.idle"), f("cpu.idle"), str(*c.idle));
}

// A new cpuset cgroup starts with empty cpus/mems and refuses tasks until they are set: copy
// them down from the parent for every level of the path.
void v1_cpuset_inherit(const CgroupDir& d) {
  std::string rel = d.path.substr(d.mount.size());
  std::string parent = d.mount;
  for (const auto& comp : split(rel, '/')) {
    if (comp.empty()) continue;
    std::string cur = parent + "/" + comp;
    for (const char* file : {"cpuset.cpus", "cpuset.mems"}) {
      if (!read_knob(cur + "/" + file).empty()) continue;
      write_knob("cpuset", cur + "/" + file, read_knob(parent + "/" + file));
    }
    parent = cur;
  }
}

void v1_cpuset(const CgroupDir& d, const oci::CpuResources& c) {
  if (!c.cpus.empty()) write_knob(field("cpu.cpus"), d.path + "/cpuset.cpus", c.cpus);
  if (!c.mems.empty()) write_knob(field("cpu.mems"), d.path + "/cpuset.mems", c.mems);
}

std::string pids_max(int64_t limit) {
  return limit > 0 ? str(limit) : "max";
}

void v1_blkio(const CgroupDir& d, const oci::BlockIoResources& b) {
  // The knob depends on the I/O scheduler (CFQ: blkio.weight, BFQ: blkio.bfq.weight); a
  // requested knob the host lacks is an error, not a silent no-op.
  auto pick = [&](const std::string& fld, std::initializer_list<const char*> names) {
    std::string tried;
    for (const char* n : names) {
      if (path_exists(d.path + "/" + n)) return d.path + "/" + n;
      tried += (tried.empty() ? "" : " nor ") + std::string(n);
    }
    throw Error(fld + ": this host's blkio cgroup has neither " + tried + " (in " + d.path + ")",
                ENOENT);
  };
  // 0 means unset (docker always sends blockIO.weight 0), as runc reads it
  if (set_nonzero(b.weight))
    write_knob(field("blockIO.weight"),
               pick(field("blockIO.weight"), {"blkio.weight", "blkio.bfq.weight"}),
               str(uint64_t{*b.weight}));
  if (set_nonzero(b.leaf_weight))
    write_knob(field("blockIO.leafWeight"),
               pick(field("blockIO.leafWeight"), {"blkio.leaf_weight"}),
               str(uint64_t{*b.leaf_weight}));
  for (size_t i = 0; i < b.weight_device.size(); ++i) {
    const auto& wd = b.weight_device[i];
    std::string fld = field("blockIO.weightDevice[" + std::to_string(i) + "]");
    std::string dev = str(wd.major) + ":" + str(wd.minor) + " ";
    if (wd.weight)
      write_knob(fld, pick(fld, {"blkio.weight_device", "blkio.bfq.weight_device"}),
                 dev + str(uint64_t{*wd.weight}));
    if (wd.leaf_weight)
      write_knob(fld, pick(fld, {"blkio.leaf_weight_device"}),
                 dev + str(uint64_t{*wd.leaf_weight}));
  }
  auto throttle = [&](const char* name, const char* file,
                      const std::vector<oci::ThrottleDevice>& v) {
    for (size_t i = 0; i < v.size(); ++i) {
      std::string fld = field(std::string("blockIO.") + name + "[" + std::to_string(i) + "]");
      write_knob(fld, pick(fld, {file}),
                 str(v[i].major) + ":" + str(v[i].minor) + " " + str(v[i].rate));
    }
  };
  throttle("throttleReadBpsDevice", "blkio.throttle.read_bps_device", b.throttle_read_bps);
  throttle("throttleWriteBpsDevice", "blkio.throttle.write_bps_device", b.throttle_write_bps);
  throttle("throttleReadIOPSDevice", "blkio.throttle.read_iops_device", b.throttle_read_iops);
  throttle("throttleWriteIOPSDevice", "blkio.throttle.write_iops_device", b.throttle_write_iops);
}

// hugetlb.<size>.<suffix>, plus the reservation counter where the kernel has one.
void write_hugetlb(const std::string& dir, const std::vector<oci::HugepageLimit>& limits,
                   const char* suffix, const char* rsvd_suffix) {
  for (size_t i = 0; i < limits.size(); ++i) {
    const auto& h = limits[i];
    std::string fld = field("hugepageLimits[" + std::to_string(i) + "]");
    write_knob(fld, dir + "/hugetlb." + h.page_size + "." + suffix, str(h.limit));
    std::string rsvd = dir + "/hugetlb." + h.page_size + "." + rsvd_suffix;
    if (path_exists(rsvd)) write_knob(fld, rsvd, str(h.limit));
  }
}

// --- v2 writers -----------------------------------------------------------------------------

void v2_memory(const CgroupDir& d, const oci::MemoryResources& m, bool updating) {
  auto f = [&](const char* name) { return d.path + "/" + name; };
  auto val = [](int64_t v) { return v == -1 ? std::string("max") : str(v); };
  if (updating && m.check_before_update.value_or(false) && m.limit && *m.limit > 0) {
    auto usage = parse_uint(read_knob(f("memory.current")));
    if (usage && *usage > static_cast<uint64_t>(*m.limit))
      throw Error(field("memory.limit") + ": " + str(*m.limit) + " is below the current usage " +
                      str(*usage) + " of " + d.path,
                  EBUSY);
  }
  if (m.swap || (m.limit && *m.limit == -1)) {
    int64_t swap;
    try {
      swap = swap_to_v2(m.swap.value_or(0), m.limit.value_or(0));
    } catch (const Error& e) {
      throw e.with_context(field("memory.swap"));
    }
    if (swap != 0 || m.swap) {
      // No swap accounting: "max" and 0 mean nothing to enforce, so they are not errors.
      int err = write_raw(f("memory.swap.max"), val(swap));
      if (err && !(err == ENOENT && (swap == -1 || swap == 0)))
        throw Error(
            field("memory.swap") + ": write " + f("memory.swap.max") + ": " + errno_text(err), err);
    }
  }
  if (m.limit) write_knob(field("memory.limit"), f("memory.max"), val(*m.limit));
  if (m.reservation) write_knob(field("memory.reservation"), f("memory.low"), val(*m.reservation));
  if (m.kernel || m.kernel_tcp || m.swappiness || m.disable_oom_killer)
    log::debug(
        "linux.resources.memory: kernel, kernelTCP, swappiness and disableOOMKiller have no "
        "cgroup v2 equivalent; ignored");
}

void v2_cpu(const CgroupDir& d, const oci::CpuResources& c) {
  auto f = [&](const char* name) { return d.path + "/" + name; };
  if (set_nonzero(c.shares))
    write_knob(field("cpu.shares"), f("cpu.weight"), str(shares_to_weight(*c.shares)));
  if (set_nonzero(c.quota) || set_nonzero(c.period)) {
    std::optional<int64_t> quota;
    if (set_nonzero(c.quota)) quota = c.quota;
    std::optional<uint64_t> period;
    if (set_nonzero(c.period)) period = c.period;
    auto cur = read_file_if_exists(f("cpu.max")).value_or("");
    write_knob(field(quota ? "cpu.quota" : "cpu.period"), f("cpu.max"),
               cpu_max_value(quota, period, cur));
  }
  if (c.burst) write_knob(field("cpu.burst"), f("cpu.max.burst"), str(*c.burst));
  if (c.idle) write_knob(field("cpu.idle"), f("cpu.idle"), str(*c.idle));
  if (!c.cpus.empty()) write_knob(field("cpu.cpus"), f("cpuset.cpus"), c.cpus);
  if (!c.mems.empty()) write_knob(field("cpu.mems"), f("cpuset.mems"), c.mems);
}

void v2_io(const CgroupDir& d, const oci::BlockIoResources& b) {
  const std::string bfq = d.path + "/io.bfq.weight";
  const bool have_bfq = path_exists(bfq);
  if (set_nonzero(b.weight)) {
    if (have_bfq)
      write_knob(field("blockIO.weight"), bfq, str(uint64_t{*b.weight}));
    else
      write_knob(field("blockIO.weight"), d.path + "/io.weight",
                 str(blkio_weight_to_io_weight(*b.weight)));
  }
  for (size_t i = 0; i < b.weight_device.size(); ++i) {
    const auto& wd = b.weight_device[i];
    std::string fld = field("blockIO.weightDevice[" + std::to_string(i) + "]");
    if (wd.leaf_weight) throw Error(fld + ".leafWeight: not supported on cgroup v2", ENOTSUP);
    if (!wd.weight) continue;
    if (!have_bfq)
      throw Error(fld + ": per-device weights need the BFQ scheduler (no " + bfq + ")", ENOENT);
    write_knob(fld, bfq, str(wd.major) + ":" + str(wd.minor) + " " + str(uint64_t{*wd.weight}));
  }
  auto max = [&](const char* name, const char* key, const std::vector<oci::ThrottleDevice>& v) {
    for (size_t i = 0; i < v.size(); ++i)
      write_knob(field(std::string("blockIO.") + name + "[" + std::to_string(i) + "]"),
                 d.path + "/io.max",
                 str(v[i].major) + ":" + str(v[i].minor) + " " + key + "=" + str(v[i].rate));
  };
  max("throttleReadBpsDevice", "rbps", b.throttle_read_bps);
  max("throttleWriteBpsDevice", "wbps", b.throttle_write_bps);
  max("throttleReadIOPSDevice", "riops", b.throttle_read_iops);
  max("throttleWriteIOPSDevice", "wiops", b.throttle_write_iops);
}

void write_unified(const CgroupDir& d, const std::map<std::string, std::string>& unified) {
  for (const auto& [key, value] : unified)
    write_knob(field("unified[" + key + "]"), d.path + "/" + key, value);
}

// Turns on controllers in cgroup.subtree_control from the hierarchy root down to the leaf's
// parent. Best effort, like runc: a controller that cannot be enabled shows up later as a
// missing file named in the error of the resource that needs it.
void enable_controllers(const CgroupDir& d, const std::vector<std::string>& wanted) {
  if (wanted.empty()) return;
  std::string cur = d.mount;
  std::vector<std::string> comps;
  for (auto& c : split(d.path.substr(d.mount.size()), '/'))
    if (!c.empty()) comps.push_back(c);
  for (size_t i = 0; i < comps.size(); ++i) {
    auto have = words(read_file_if_exists(cur + "/cgroup.controllers").value_or(""));
    auto on = words(read_file_if_exists(cur + "/cgroup.subtree_control").value_or(""));
    for (const auto& c : wanted) {
      if (std::find(have.begin(), have.end(), c) == have.end()) continue;
      if (std::find(on.begin(), on.end(), c) != on.end()) continue;
      if (int err = write_raw(cur + "/cgroup.subtree_control", "+" + c))
        log::debug("enable " + c + " in " + cur + "/cgroup.subtree_control: " + errno_text(err));
    }
    cur += "/" + comps[i];
  }
}

void v2_freeze(const std::string& dir, bool freeze) {
  const char* verb = freeze ? "freeze" : "thaw";
  write_knob(verb, dir + "/cgroup.freeze", freeze ? "1" : "0");
  try {
    wait_until(
        std::string(verb) + " " + dir, [&] { return v2_events_flag(dir, "frozen", freeze); },
        std::chrono::seconds(2));
  } catch (const Error&) {
    if (freeze) write_raw(dir + "/cgroup.freeze", "0");
    throw;
  }
}

void v1_freeze(const std::string& dir, bool freeze) {
  const std::string file = dir + "/freezer.state";
  const std::string want = freeze ? "FROZEN" : "THAWED";
  const char* verb = freeze ? "freeze" : "thaw";
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  for (int i = 0;; ++i) {
    // A task in an uninterruptible sleep can keep the cgroup FREEZING; writing again retries.
    if (i % 50 == 0) write_knob(verb, file, want);
    std::string state = read_knob(file);
    if (state == want) return;
    if (std::chrono::steady_clock::now() > deadline) {
      if (freeze) write_raw(file, "THAWED");
      throw Error(std::string(verb) + " " + dir + ": still " + state + " after 2s", EBUSY);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

}  // namespace racker::runtime::cgroups_internal
