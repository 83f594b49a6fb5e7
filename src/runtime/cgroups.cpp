// Cgroup managers: v1 (one directory per mounted hierarchy), v2 (one directory in the unified
// hierarchy, devices through an eBPF program) and hybrid (v1 for every v1 controller plus the
// same cgroup in the cgroup2 mount at /sys/fs/cgroup/unified). Path semantics follow runc's
// cgroupfs managers so existing bundles land where users expect them. Path resolution is in
// cgroups_paths.cpp, device rules in cgroups_devices.cpp, the file writers in cgroups_writers.cpp.
#include "runtime/cgroups.hpp"

#include <dirent.h>
#include <linux/magic.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <thread>

#include "base/error.hpp"
#include "base/fs.hpp"
#include "base/ids.hpp"
#include "base/log.hpp"
#include "base/strings.hpp"
#include "runtime/cgroups_internal.hpp"
#include "runtime/cgroups_writers.hpp"
#include "runtime/idmap.hpp"

namespace racker::runtime {

using namespace cgroups_internal;

namespace {

// --- cgroup directories ---------------------------------------------------------------------

constexpr auto kPoll = std::chrono::milliseconds(10);

// mkdir each component of d.path below its mount, remembering what we made.
void make_dir(CgroupDir& d) {
  std::string rel = d.path.substr(d.mount.size());
  std::string cur = d.mount;
  for (const auto& comp : split(rel, '/')) {
    if (comp.empty()) continue;
    cur += "/" + comp;
    if (::mkdir(cur.c_str(), 0755) == 0) {
      d.created.push_back(cur);
    } else if (errno != EEXIST) {
      int err = errno;
      throw Error("create cgroup " + cur + ": " + errno_text(err), err);
    }
  }
}

// rmdir dir after its sub-cgroups (made by the container); returns 0 or the errno.
int rmdir_tree(const std::string& dir) noexcept {
  if (DIR* d = ::opendir(dir.c_str())) {
    std::vector<std::string> subs;
    while (auto* e = ::readdir(d)) {
      std::string_view n = e->d_name;
      if (n != "." && n != ".." && e->d_type == DT_DIR) subs.emplace_back(n);
    }
    ::closedir(d);
    for (const auto& s : subs) rmdir_tree(dir + "/" + s);
  }
  if (::rmdir(dir.c_str()) == 0 || errno == ENOENT) return 0;
  return errno;
}

// Removes what make_dir created, leaf first. Only the leaf (ours alone) is emptied of
// sub-cgroups and retried while busy; an intermediate still busy holds someone else's cgroup.
void remove_dirs(CgroupDir& d) noexcept {
  std::vector<std::string> left;
  for (auto it = d.created.rbegin(); it != d.created.rend(); ++it) {
    const bool leaf = *it == d.path;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(1);
    int err = 0;
    for (;;) {
      if (leaf) {
        err = rmdir_tree(*it);
      } else {
        err = ::rmdir(it->c_str()) == 0 || errno == ENOENT ? 0 : errno;
      }
      if (err != EBUSY || !leaf || std::chrono::steady_clock::now() > deadline) break;
      std::this_thread::sleep_for(kPoll);
    }
    if (err != 0) {
      log::debug("remove cgroup " + *it + ": " + errno_text(err));
      left.insert(left.begin(), *it);
      if (leaf) {
        // keep the parents too: they are not empty
        for (auto up = std::next(it); up != d.created.rend(); ++up) left.insert(left.begin(), *up);
        break;
      }
    }
  }
  d.created = std::move(left);
}

void collect_pids(const std::string& dir, std::vector<pid_t>& out) {
  auto procs = read_file_if_exists(dir + "/cgroup.procs");
  if (!procs) return;
  for (auto& w : split(*procs, '\n'))
    if (auto v = parse_int(trim(w)); v && *v > 0) out.push_back(static_cast<pid_t>(*v));
  if (DIR* d = ::opendir(dir.c_str())) {
    std::vector<std::string> subs;
    while (auto* e = ::readdir(d)) {
      std::string_view n = e->d_name;
      if (n != "." && n != ".." && e->d_type == DT_DIR) subs.emplace_back(n);
    }
    ::closedir(d);
    for (const auto& s : subs) collect_pids(dir + "/" + s, out);
  }
}

// --- validation helpers ---------------------------------------------------------------------

void check_hugepage_sizes(const oci::Resources& res) {
  if (res.hugepage_limits.empty()) return;
  auto have = host_hugepage_names();
  for (size_t i = 0; i < res.hugepage_limits.size(); ++i) {
    const auto& ps = res.hugepage_limits[i].page_size;
    if (std::find(have.begin(), have.end(), ps) != have.end()) continue;
    std::string list;
    for (const auto& h : have) list += (list.empty() ? "" : ", ") + h;
    throw Error(field("hugepageLimits[" + std::to_string(i) + "].pageSize") + ": \"" + ps +
                    "\" is not a huge page size of this host (" +
                    (list.empty() ? "it has none" : "it has " + list) + ")",
                EINVAL);
  }
}

void check_unified_keys(const oci::Resources& res) {
  for (const auto& [key, value] : res.unified)
    if (key.empty() || key.find('/') != std::string::npos || key.find("..") != std::string::npos)
      throw Error(field("unified") + ": invalid key \"" + key + "\"", EINVAL);
}

// --- managers -------------------------------------------------------------------------------

std::string layout_name(CgroupLayout l) {
  switch (l) {
    case CgroupLayout::v1:
      return "v1";
    case CgroupLayout::v2:
      return "v2";
    case CgroupLayout::hybrid:
      return "hybrid";
  }
  return "v1";
}

// Directory bookkeeping shared by the three backends: where the cgroup lives in each
// hierarchy, what was created, joining, listing, freezing and removal. The backends differ in
// where each resource goes.
class CgroupfsManager : public CgroupManager {
 public:
  CgroupfsManager(CgroupLayout layout, std::vector<CgroupDir> v1, std::optional<CgroupDir> unified,
                  bool manage_ancestors)
      : layout_(layout),
        v1_(std::move(v1)),
        unified_(std::move(unified)),
        manage_ancestors_(manage_ancestors) {}

  nlohmann::json save() const override {
    nlohmann::json j = {{"layout", layout_name(layout_)}, {"hierarchies", nlohmann::json::array()}};
    if (!manage_ancestors_) j["manage_ancestors"] = false;
    for (const auto& d : v1_) j["hierarchies"].push_back(dir_to_json(d));
    j["unified"] = unified_ ? dir_to_json(*unified_) : nlohmann::json(nullptr);
    return j;
  }

  void apply(pid_t pid, const oci::Resources* res) override {
    static const oci::Resources kNone;
    const oci::Resources& r = res ? *res : kNone;
    for (auto& d : v1_) {
      make_dir(d);
      if (d.has("cpuset")) v1_cpuset_inherit(d);
    }
    if (unified_) {
      make_dir(*unified_);
      if (manage_ancestors_) enable_controllers(*unified_, unified_controllers(r));
    }
    // A cgroup that holds other processes is not the container's: its limits, pause and
    // delete --force would reach them (as runc 1.2, refuse it)
    auto others = pids();
    std::erase(others, pid);
    if (!others.empty()) {
      std::string list;
      for (size_t i = 0; i < others.size() && i < 5; ++i)
        list += (i ? ", " : "") + std::to_string(others[i]);
      throw Error("cgroup " + (unified_ ? unified_->path : v1_.front().path) + " already holds " +
                      std::to_string(others.size()) + " process(es) (" + list +
                      (others.size() > 5 ? ", ..." : "") +
                      "): a container needs a cgroup of its own",
                  EBUSY);
    }
    set(r, /*updating=*/false);
    add_process(pid, 0);
  }

  void add_process(pid_t pid, pid_t init_pid) override {
    // an ordinary user's exec from outside the cgroup delegated to the user (an ssh session
    // next to a container started in the user's systemd session): the kernel wants write
    // access to the common ancestor, which is root's. As runc, the process stays where it is.
    auto outside_delegation = [&](int err) {
      if (init_pid <= 0 || host_root() || (err != EACCES && err != EPERM)) return false;
      log::debug("exec: the process stays in its own cgroup: " + errno_text(err));
      return true;
    };
    auto join = [&](const std::string& dir) {
      int err = write_raw(dir + "/cgroup.procs", std::to_string(pid));
      if (err && !outside_delegation(err))
        throw Error("join cgroup: write " + dir + "/cgroup.procs: " + errno_text(err), err);
      return err == 0;
    };
    for (const auto& d : v1_)
      if (!join(d.path)) return;
    if (!unified_) return;
    int err = write_raw(unified_->path + "/cgroup.procs", std::to_string(pid));
    if (outside_delegation(err)) return;
    if (err == EBUSY && init_pid > 0) {
      // a booted systemd enabled controllers for its sub-cgroups: the container's cgroup
      // itself may hold no process, so join the init's leaf (what runc does too)
      auto own = parse_proc_cgroup(
          read_file_if_exists("/proc/" + std::to_string(init_pid) + "/cgroup").value_or(""));
      std::string mount_root = "/";
      for (const auto& m : parse_cgroup_mounts(read_file("/proc/self/mountinfo"), unified_->mount))
        if (m.v2 && m.mount_point == unified_->mount) mount_root = m.root;
      if (auto leaf = leaf_of_init(unified_->path, unified_->mount, mount_root, own[""])) {
        log::debug("join cgroup: " + unified_->path + " is busy, joining " + *leaf);
        join(*leaf);
        return;
      }
    }
    if (err)
      throw Error("join cgroup: write " + unified_->path + "/cgroup.procs: " + errno_text(err),
                  err);
  }

  void update(const oci::Resources& res) override { set(res, /*updating=*/true); }

  void delegate(uid_t uid, gid_t gid) override {
    auto own = [&](const std::string& path, bool must) {
      if (::chown(path.c_str(), uid, gid) != 0 && (must || errno != ENOENT))
        throw_errno("delegate cgroup: chown " + path);
    };
    if (unified_) {
      own(unified_->path, true);
      std::vector<std::string> files = {"cgroup.procs", "cgroup.threads", "cgroup.subtree_control"};
      for (auto& f : split(read_file_if_exists("/sys/kernel/cgroup/delegate").value_or(""), '\n'))
        if (!trim(f).empty() && std::find(files.begin(), files.end(), trim(f)) == files.end())
          files.push_back(trim(f));
      for (auto& f : files) own(unified_->path + "/" + f, false);
    }
    for (auto& d : v1_) {
      if (!d.has("name=systemd")) continue;
      own(d.path, true);
      for (auto& f : dir_names(d.path)) own(d.path + "/" + f, false);
    }
  }

  void freeze() override { set_frozen(true); }
  void thaw() override { set_frozen(false); }

  bool frozen() const override {
    if (const auto* d = v1_dir("freezer")) {
      return read_file_if_exists(d->path + "/freezer.state").value_or("").find("FROZEN") == 0;
    }
    if (unified_) return v2_events_flag(unified_->path, "frozen", true);
    return false;
  }

  std::vector<pid_t> pids() const override {
    std::vector<pid_t> out;
    const CgroupDir* d = nullptr;
    for (const char* c : {"pids", "freezer", "memory", "devices", "cpu", "name=systemd"})
      if ((d = v1_dir(c))) break;
    if (!d) d = unified_ ? &*unified_ : (v1_.empty() ? nullptr : &v1_.front());
    if (d) collect_pids(d->path, out);
    std::sort(out.begin(), out.end());
    out.erase(std::unique(out.begin(), out.end()), out.end());
    return out;
  }

  void destroy() noexcept override {
    try {
      kill_leftovers();
    } catch (const std::exception& e) {
      log::debug(std::string("cgroup destroy: ") + e.what());
    }
    for (auto& d : v1_) remove_dirs(d);
    if (unified_) remove_dirs(*unified_);
  }

  std::string unified_path() const override { return unified_ ? unified_->path : ""; }

 protected:
  // Writes res into the cgroup(s); devices only at creation or when res names some.
  virtual void set(const oci::Resources& res, bool updating) = 0;
  // Controllers to turn on in the unified hierarchy's ancestors.
  virtual std::vector<std::string> unified_controllers(const oci::Resources&) const { return {}; }

  const CgroupDir* v1_dir(std::string_view controller) const {
    for (const auto& d : v1_)
      if (d.has(controller)) return &d;
    return nullptr;
  }
  // The v1 directory of controller, or an error naming the field that needs it.
  const CgroupDir& need_v1(std::string_view controller, const std::string& fld) const {
    if (const auto* d = v1_dir(controller)) return *d;
    throw Error(fld + ": no " + std::string(controller) + " cgroup hierarchy on this host", ENOENT);
  }
  void need_v1_file(std::string_view controller, const std::string& fld, const char* file) const {
    const auto& d = need_v1(controller, fld);
    if (!path_exists(d.mount + "/" + file))
      throw Error(fld + ": this host has no " + file + " (in " + d.mount + ")", ENOENT);
  }
  bool unified_has(std::string_view controller) const {
    if (!unified_) return false;
    auto have = controllers_of(unified_->mount);
    return std::find(have.begin(), have.end(), controller) != have.end();
  }

  // Checks for the v1 controllers res needs (shared by the v1 and hybrid backends).
  void validate_v1(const oci::Resources& res, bool hugetlb_in_unified) const {
    if (res.memory) {
      const auto& m = *res.memory;
      need_v1("memory", field("memory"));
      if (m.swap && *m.swap != -1 && *m.swap != 0)
        need_v1_file("memory", field("memory.swap"), "memory.memsw.limit_in_bytes");
      if (m.kernel_tcp)
        need_v1_file("memory", field("memory.kernelTCP"), "memory.kmem.tcp.limit_in_bytes");
      if (m.swappiness && *m.swappiness > 100)
        throw Error(
            field("memory.swappiness") + ": " + str(*m.swappiness) + " is out of range (0 to 100)",
            EINVAL);
    }
    if (res.cpu) {
      const auto& c = *res.cpu;
      if (set_nonzero(c.shares) || set_nonzero(c.quota) || set_nonzero(c.period) || c.burst ||
          set_nonzero(c.realtime_period) || set_nonzero(c.realtime_runtime) || c.idle)
        need_v1("cpu", field("cpu"));
      if (set_nonzero(c.realtime_runtime) || set_nonzero(c.realtime_period))
        need_v1_file("cpu", field("cpu.realtimeRuntime"), "cpu.rt_runtime_us");
      if (c.burst) need_v1_file("cpu", field("cpu.burst"), "cpu.cfs_burst_us");
      if (c.idle) need_v1_file("cpu", field("cpu.idle"), "cpu.idle");
      if (!c.cpus.empty() || !c.mems.empty()) need_v1("cpuset", field("cpu.cpus"));
    }
    if (res.pids_limit) need_v1("pids", field("pids"));
    if (res.block_io) {
      const auto& b = *res.block_io;
      need_v1("blkio", field("blockIO"));
      auto throttle = [&](const char* name, const char* file, const auto& v) {
        if (!v.empty()) need_v1_file("blkio", field(std::string("blockIO.") + name), file);
      };
      throttle("throttleReadBpsDevice", "blkio.throttle.read_bps_device", b.throttle_read_bps);
      throttle("throttleWriteBpsDevice", "blkio.throttle.write_bps_device", b.throttle_write_bps);
      throttle("throttleReadIOPSDevice", "blkio.throttle.read_iops_device", b.throttle_read_iops);
      throttle("throttleWriteIOPSDevice", "blkio.throttle.write_iops_device",
               b.throttle_write_iops);
    }
    if (!res.hugepage_limits.empty()) {
      if (!v1_dir("hugetlb") && !hugetlb_in_unified)
        throw Error(field("hugepageLimits") + ": no hugetlb controller on this host", ENOENT);
      check_hugepage_sizes(res);
    }
    if (res.network) {
      if (res.network->class_id) need_v1("net_cls", field("network.classID"));
      if (!res.network->priorities.empty()) need_v1("net_prio", field("network.priorities"));
    }
    if (!res.devices.empty() && !v1_dir("devices") && !unified_)
      throw Error(field("devices") + ": no devices cgroup hierarchy on this host", ENOENT);
  }

  // Writes what v1 hierarchies hold (everything but hugetlb when hugetlb_in_unified).
  void set_v1(const oci::Resources& res, bool updating, bool hugetlb_in_unified) {
    if (res.memory) v1_memory(need_v1("memory", field("memory")), *res.memory, updating);
    if (res.cpu) {
      const auto& c = *res.cpu;
      if (set_nonzero(c.shares) || set_nonzero(c.quota) || set_nonzero(c.period) || c.burst ||
          set_nonzero(c.realtime_period) || set_nonzero(c.realtime_runtime) || c.idle)
        v1_cpu(need_v1("cpu", field("cpu")), c);
      if (!c.cpus.empty() || !c.mems.empty()) v1_cpuset(need_v1("cpuset", field("cpu.cpus")), c);
    }
    if (res.pids_limit)
      write_knob(field("pids.limit"), need_v1("pids", field("pids")).path + "/pids.max",
                 pids_max(*res.pids_limit));
    if (res.block_io) v1_blkio(need_v1("blkio", field("blockIO")), *res.block_io);
    if (!res.hugepage_limits.empty() && !hugetlb_in_unified)
      write_hugetlb(need_v1("hugetlb", field("hugepageLimits")).path, res.hugepage_limits,
                    "limit_in_bytes", "rsvd.limit_in_bytes");
    if (res.network) {
      if (res.network->class_id)
        write_knob(field("network.classID"),
                   need_v1("net_cls", field("network.classID")).path + "/net_cls.classid",
                   str(uint64_t{*res.network->class_id}));
      const auto& prios = res.network->priorities;
      for (size_t i = 0; i < prios.size(); ++i)
        write_knob(field("network.priorities[" + std::to_string(i) + "]"),
                   need_v1("net_prio", field("network.priorities")).path + "/net_prio.ifpriomap",
                   prios[i].name + " " + str(uint64_t{prios[i].priority}));
    }
    // an ordinary user can neither load a device filter nor make device nodes: the devices a
    // rootless container has are bound from the host, guarded by their own permissions (runc
    // and crun skip the rules alike)
    if (!host_root()) return;
    if (!updating || !res.devices.empty()) {
      if (const auto* d = v1_dir("devices")) {
        v1_devices(*d, res.devices);
      } else if (unified_) {
        set_v2_devices(res);
      } else if (!res.devices.empty()) {
        throw Error(field("devices") + ": no devices cgroup hierarchy on this host", ENOENT);
      } else {
        log::warn("no devices cgroup on this host: the container's device access is not limited");
      }
    }
  }

  void set_v2_devices(const oci::Resources& res) {
    try {
      attach_device_filter(unified_->path, with_default_devices(res.devices));
    } catch (const Error& e) {
      throw e.with_context(field("devices"));
    }
  }

  CgroupLayout layout_;
  std::vector<CgroupDir> v1_;
  std::optional<CgroupDir> unified_;
  bool manage_ancestors_;

 private:
  void set_frozen(bool freeze) {
    if (const auto* d = v1_dir("freezer"))
      v1_freeze(d->path, freeze);
    else if (unified_)
      v2_freeze(unified_->path, freeze);
    else
      throw Error(std::string(freeze ? "freeze" : "thaw") + ": no freezer cgroup on this host",
                  ENOENT);
  }

  // Processes still in a cgroup we created would keep it from being removed.
  void kill_leftovers() {
    auto ours = [](const CgroupDir& d) {
      return !d.created.empty() && d.created.back() == d.path && path_exists(d.path);
    };
    bool any = unified_ && ours(*unified_);
    for (const auto& d : v1_) any = any || ours(d);
    if (!any || pids().empty()) return;
    if (unified_ && ours(*unified_) && path_exists(unified_->path + "/cgroup.kill")) {
      write_raw(unified_->path + "/cgroup.kill", "1");
    } else {
      // Freeze first so nothing forks between listing and killing; SIGKILL lands on thaw.
      const auto* fz = v1_dir("freezer");
      if (fz && ours(*fz)) write_raw(fz->path + "/freezer.state", "FROZEN");
      for (pid_t p : pids()) ::kill(p, SIGKILL);
      if (fz && ours(*fz)) write_raw(fz->path + "/freezer.state", "THAWED");
    }
    try {
      wait_until(
          "wait for cgroup to empty", [&] { return pids().empty(); }, std::chrono::seconds(1));
    } catch (const Error& e) {
      log::debug(e.what());
    }
  }
};

class V1Manager final : public CgroupfsManager {
 public:
  using CgroupfsManager::CgroupfsManager;

  void validate(const oci::Resources& res) const override {
    validate_v1(res, false);
    if (!res.unified.empty())
      throw Error(field("unified") + ": needs cgroup v2, this host has only cgroup v1", ENOTSUP);
  }

 protected:
  void set(const oci::Resources& res, bool updating) override {
    if (!res.unified.empty())
      throw Error(field("unified") + ": needs cgroup v2, this host has only cgroup v1", ENOTSUP);
    set_v1(res, updating, false);
  }
};

// v1 for every v1 controller; the unified hierarchy gets the same cgroup (so a cgroup
// namespace or systemd inside sees it), hugetlb when v1 has none, and linux.resources.unified.
class HybridManager final : public CgroupfsManager {
 public:
  using CgroupfsManager::CgroupfsManager;

  void validate(const oci::Resources& res) const override {
    validate_v1(res, hugetlb_in_unified());
    check_unified_keys(res);
    auto have = controllers_of(unified_->mount);
    for (const auto& [key, value] : res.unified) {
      std::string ctrl = key.substr(0, key.find('.'));
      if (ctrl != "cgroup" && std::find(have.begin(), have.end(), ctrl) == have.end())
        throw Error(field("unified[" + key + "]") + ": controller \"" + ctrl +
                        "\" is not in this host's cgroup v2 hierarchy (" + unified_->mount +
                        "/cgroup.controllers)",
                    ENOENT);
    }
  }

 protected:
  void set(const oci::Resources& res, bool updating) override {
    check_unified_keys(res);
    const bool in_unified = hugetlb_in_unified();
    set_v1(res, updating, in_unified);
    if (in_unified && !res.hugepage_limits.empty())
      write_hugetlb(unified_->path, res.hugepage_limits, "max", "rsvd.max");
    write_unified(*unified_, res.unified);
  }

  std::vector<std::string> unified_controllers(const oci::Resources& res) const override {
    std::vector<std::string> out;
    if (!res.hugepage_limits.empty() && hugetlb_in_unified()) out.push_back("hugetlb");
    for (const auto& [key, value] : res.unified) {
      std::string ctrl = key.substr(0, key.find('.'));
      if (ctrl != "cgroup" && std::find(out.begin(), out.end(), ctrl) == out.end())
        out.push_back(ctrl);
    }
    return out;
  }

 private:
  bool hugetlb_in_unified() const { return !v1_dir("hugetlb") && unified_has("hugetlb"); }
};

class V2Manager final : public CgroupfsManager {
 public:
  using CgroupfsManager::CgroupfsManager;

  void validate(const oci::Resources& res) const override {
    auto have = controllers_of(unified_->mount);
    auto need = [&](const char* ctrl, const std::string& fld) {
      if (std::find(have.begin(), have.end(), ctrl) == have.end())
        throw Error(fld + ": cgroup v2 controller \"" + ctrl + "\" is not available (" +
                        unified_->mount + "/cgroup.controllers)",
                    ENOENT);
    };
    if (res.memory) {
      const auto& m = *res.memory;
      if (m.limit || m.reservation || m.swap) need("memory", field("memory"));
      if (m.swap || (m.limit && *m.limit == -1)) {
        try {
          swap_to_v2(m.swap.value_or(0), m.limit.value_or(0));
        } catch (const Error& e) {
          throw e.with_context(field("memory.swap"));
        }
      }
    }
    if (res.cpu) {
      const auto& c = *res.cpu;
      if (set_nonzero(c.shares) || set_nonzero(c.quota) || set_nonzero(c.period) || c.burst ||
          c.idle)
        need("cpu", field("cpu"));
      if (set_nonzero(c.realtime_period) || set_nonzero(c.realtime_runtime))
        throw Error(
            field("cpu.realtimeRuntime") + ": real-time limits are not supported on cgroup v2",
            ENOTSUP);
      if (!c.cpus.empty() || !c.mems.empty()) need("cpuset", field("cpu.cpus"));
    }
    if (res.pids_limit) need("pids", field("pids"));
    if (res.block_io) {
      const auto& b = *res.block_io;
      if (set_nonzero(b.leaf_weight))
        throw Error(field("blockIO.leafWeight") + ": not supported on cgroup v2", ENOTSUP);
      if (set_nonzero(b.weight) || !b.weight_device.empty() || !b.throttle_read_bps.empty() ||
          !b.throttle_write_bps.empty() || !b.throttle_read_iops.empty() ||
          !b.throttle_write_iops.empty())
        need("io", field("blockIO"));
    }
    if (!res.hugepage_limits.empty()) {
      need("hugetlb", field("hugepageLimits"));
      check_hugepage_sizes(res);
    }
    if (res.network && (res.network->class_id || !res.network->priorities.empty()))
      throw Error(field("network") + ": net_cls/net_prio do not exist on cgroup v2", ENOTSUP);
    check_unified_keys(res);
    for (const auto& [key, value] : res.unified) {
      std::string ctrl = key.substr(0, key.find('.'));
      if (ctrl != "cgroup") need(ctrl.c_str(), field("unified[" + key + "]"));
    }
  }

 protected:
  void set(const oci::Resources& res, bool updating) override {
    check_unified_keys(res);
    const auto& d = *unified_;
    if (res.memory) v2_memory(d, *res.memory, updating);
    if (res.cpu) {
      if (set_nonzero(res.cpu->realtime_period) || set_nonzero(res.cpu->realtime_runtime))
        throw Error(
            field("cpu.realtimeRuntime") + ": real-time limits are not supported on cgroup v2",
            ENOTSUP);
      v2_cpu(d, *res.cpu);
    }
    if (res.pids_limit)
      write_knob(field("pids.limit"), d.path + "/pids.max", pids_max(*res.pids_limit));
    if (res.block_io) {
      if (set_nonzero(res.block_io->leaf_weight))
        throw Error(field("blockIO.leafWeight") + ": not supported on cgroup v2", ENOTSUP);
      v2_io(d, *res.block_io);
    }
    if (!res.hugepage_limits.empty()) write_hugetlb(d.path, res.hugepage_limits, "max", "rsvd.max");
    if (res.network && (res.network->class_id || !res.network->priorities.empty()))
      throw Error(field("network") + ": net_cls/net_prio do not exist on cgroup v2", ENOTSUP);
    write_unified(d, res.unified);
    // (an ordinary user can load no device filter: see set_v1)
    if (host_root() && (!updating || !res.devices.empty())) set_v2_devices(res);
  }

  // Like runc: every controller the root offers, so later `update`s find their files.
  std::vector<std::string> unified_controllers(const oci::Resources&) const override {
    return controllers_of(unified_->mount);
  }
};

}  // namespace

std::unique_ptr<CgroupManager> cgroups_internal::make_cgroupfs_manager(
    CgroupLayout layout, std::vector<CgroupDir> v1, std::optional<CgroupDir> unified,
    bool manage_ancestors) {
  switch (layout) {
    case CgroupLayout::v1:
      return std::make_unique<V1Manager>(layout, std::move(v1), std::nullopt, manage_ancestors);
    case CgroupLayout::hybrid:
      if (!unified) throw Error("cgroups: hybrid layout without a unified hierarchy");
      return std::make_unique<HybridManager>(layout, std::move(v1), std::move(unified),
                                             manage_ancestors);
    case CgroupLayout::v2:
      if (!unified) throw Error("cgroups: v2 layout without a unified hierarchy");
      return std::make_unique<V2Manager>(layout, std::vector<CgroupDir>{}, std::move(unified),
                                         manage_ancestors);
  }
  throw Error("cgroups: unknown layout");
}

CgroupLayout detect_cgroup_layout(const std::string& mount_root) {
  auto is_cgroup2 = [](const std::string& p) {
    struct statfs st;
    return ::statfs(p.c_str(), &st) == 0 && st.f_type == CGROUP2_SUPER_MAGIC;
  };
  if (is_cgroup2(mount_root)) return CgroupLayout::v2;
  if (is_cgroup2(mount_root + "/unified")) return CgroupLayout::hybrid;
  return CgroupLayout::v1;
}

std::vector<oci::DeviceRule> device_rules_for(const std::vector<oci::Device>& devices) {
  std::vector<oci::DeviceRule> out;
  for (const auto& d : devices) {
    if (d.type == 'p') continue;
    out.push_back(oci::DeviceRule{.allow = true,
                                  .type = d.type == 'b' ? 'b' : 'c',
                                  .major = d.major,
                                  .minor = d.minor,
                                  .access = "rwm"});
  }
  return out;
}

std::string cgroup_path_below_root(const std::string& cgroups_path) {
  if (auto s = systemd_to_cgroupfs(cgroups_path)) return *s;
  return clean_path("/" + cgroups_path);
}

namespace {

std::string no_cgroup_reason() {
  // (the root of a rootless racker's namespace is the user outside)
  uid_t uid = ::geteuid() == 0 ? host_uid_of_root().value_or(0) : ::geteuid();
  return "the container has no cgroup: none here is writable by uid " + std::to_string(uid) +
         " (run it from a cgroup delegated to you: your systemd user session, or "
         "systemd-run --user --scope)";
}

// What an ordinary user gets where no cgroup is theirs to write: no cgroup at all, as runc
// and crun run rootless containers. Limits cannot be honoured and say why; the container's
// processes are those of its pid namespace, which die with its init.
class NoCgroup final : public CgroupManager {
 public:
  nlohmann::json save() const override { return {{"none", true}, {"init", init_}}; }
  void validate(const oci::Resources& res) const override {
    const char* what = res.memory                     ? "memory"
                       : res.cpu                      ? "cpu"
                       : res.pids_limit               ? "pids"
                       : res.block_io                 ? "blockIO"
                       : !res.hugepage_limits.empty() ? "hugepageLimits"
                       : res.network                  ? "network"
                       : !res.unified.empty()         ? "unified"
                                                      : nullptr;
    if (what)
      throw Error(std::string("linux.resources.") + what + ": " + no_cgroup_reason(), EPERM);
  }
  void apply(pid_t pid, const oci::Resources*) override { init_ = pid; }
  void add_process(pid_t, pid_t) override {}
  void update(const oci::Resources&) override {
    throw Error("update: " + no_cgroup_reason(), EPERM);
  }
  void freeze() override { throw Error("pause: " + no_cgroup_reason(), EPERM); }
  void thaw() override { throw Error("resume: " + no_cgroup_reason(), EPERM); }
  bool frozen() const override { return false; }
  std::vector<pid_t> pids() const override {
    if (init_ > 0 && ::kill(init_, 0) == 0) return {init_};
    return {};
  }
  void destroy() noexcept override {}
  void delegate(uid_t, gid_t) override {}
  std::string unified_path() const override { return ""; }
  pid_t init_ = 0;
};

// The nearest directory at or above path that exists is writable by the caller.
bool writable_below(const std::string& path) {
  std::string p = path;
  while (!p.empty() && p != "/") {
    if (::access(p.c_str(), F_OK) == 0) return ::access(p.c_str(), W_OK) == 0;
    p = p.substr(0, p.rfind('/'));
  }
  return false;
}

}  // namespace

std::unique_ptr<CgroupManager> CgroupManager::create(const std::string& cgroups_path,
                                                     const std::string& container_id,
                                                     bool systemd) {
  const std::string root = "/sys/fs/cgroup";
  CgroupLayout layout = detect_cgroup_layout(root);
  auto mounts = parse_cgroup_mounts(read_file("/proc/self/mountinfo"), root);
  auto own = parse_proc_cgroup(read_file("/proc/self/cgroup"));
  // the system's manager makes scopes for the host's root only
  if (systemd && systemd::booted() && host_root())
    return make_systemd_manager(cgroups_path, container_id, layout, mounts, own, root);
  if (systemd) log::debug("systemd is not running: cgroupfs places the container");
  auto dirs =
      resolve_cgroup_dirs(layout, mounts, own, inner_path(cgroups_path, container_id), root);
  if (!host_root()) {
    // an ordinary user (or the root of a rootless racker's namespace): the hierarchies delegated to
    // them, else none
    std::erase_if(dirs.v1, [](const CgroupDir& d) { return !writable_below(d.path); });
    if (dirs.unified && !writable_below(dirs.unified->path)) dirs.unified.reset();
    if (!dirs.unified) return std::make_unique<NoCgroup>();
    if (layout != CgroupLayout::v2) layout = CgroupLayout::hybrid;
  }
  return make_cgroupfs_manager(layout, std::move(dirs.v1), std::move(dirs.unified), true);
}

std::unique_ptr<CgroupManager> CgroupManager::load(const nlohmann::json& saved) {
  if (saved.is_object() && saved.contains("systemd")) {
    try {
      return load_systemd_manager(saved);
    } catch (const nlohmann::json::exception& e) {
      throw Error(std::string("cgroup state: ") + e.what());
    }
  }
  if (saved.is_object() && saved.contains("none")) {
    auto m = std::make_unique<NoCgroup>();
    if (saved.contains("init") && saved["init"].is_number_integer())
      m->init_ = saved["init"].get<pid_t>();
    return m;
  }
  if (!saved.is_object() || !saved.contains("layout") || !saved["layout"].is_string())
    throw Error("cgroup state: missing \"layout\"");
  std::string name = saved["layout"].get<std::string>();
  CgroupLayout layout;
  if (name == "v1")
    layout = CgroupLayout::v1;
  else if (name == "v2")
    layout = CgroupLayout::v2;
  else if (name == "hybrid")
    layout = CgroupLayout::hybrid;
  else
    throw Error("cgroup state: unknown layout \"" + name + "\"");
  std::vector<CgroupDir> v1;
  if (saved.contains("hierarchies") && saved["hierarchies"].is_array())
    for (const auto& h : saved["hierarchies"]) v1.push_back(dir_from_json(h));
  std::optional<CgroupDir> unified;
  if (saved.contains("unified") && saved["unified"].is_object())
    unified = dir_from_json(saved["unified"]);
  bool manage_ancestors = saved.value("manage_ancestors", true);
  return make_cgroupfs_manager(layout, std::move(v1), std::move(unified), manage_ancestors);
}

}  // namespace racker::runtime
