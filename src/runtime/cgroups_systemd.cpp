// The systemd cgroup driver: on a host whose PID 1 is systemd, the container's cgroup is a
// transient scope (slice:prefix:name -> prefix-name.scope in slice) that systemd creates with
// Delegate=yes, the container's processes in it and its limits as unit properties — what
// runc's systemd driver, podman and nspawn do. systemd owns the scope and every cgroup above
// it (their cgroup.subtree_control included); the container owns what is below. The files of
// the scope itself are written too, through the cgroupfs manager of the host's layout, so
// limits systemd has no property for still apply; that manager never touches an ancestor.
#include <signal.h>

#include <algorithm>
#include <cerrno>
#include <iterator>
#include <limits>

#include "base/error.hpp"
#include "base/fs.hpp"
#include "base/log.hpp"
#include "runtime/cgroups.hpp"
#include "runtime/cgroups_internal.hpp"
#include "runtime/cgroups_writers.hpp"
#include "runtime/systemd_bus.hpp"

namespace racker::runtime {

using namespace cgroups_internal;

namespace cgroups_internal {

std::vector<systemd::Property> limit_properties(bool v2, const oci::Resources& r) {
  constexpr uint64_t kInfinity = std::numeric_limits<uint64_t>::max();
  std::vector<systemd::Property> p;
  if (r.pids_limit)
    p.push_back({"TasksMax", *r.pids_limit > 0 ? static_cast<uint64_t>(*r.pids_limit) : kInfinity});
  // systemd names the v1 knobs differently (MemoryLimit=, CPUShares=): on v1 and hybrid
  // hosts the cgroupfs writes alone set those
  if (!v2) return p;
  auto limit = [&](int64_t v) { return v == -1 ? kInfinity : static_cast<uint64_t>(v); };
  if (const auto& m = r.memory) {
    if (m->limit && *m->limit != 0) p.push_back({"MemoryMax", limit(*m->limit)});
    if (m->reservation && *m->reservation != 0) p.push_back({"MemoryLow", limit(*m->reservation)});
    if (m->swap || (m->limit && *m->limit == -1)) {
      int64_t swap = swap_to_v2(m->swap.value_or(0), m->limit.value_or(0));
      if (swap != 0 || m->swap) p.push_back({"MemorySwapMax", limit(swap)});
    }
  }
  if (const auto& c = r.cpu) {
    if (c->shares && *c->shares != 0) p.push_back({"CPUWeight", shares_to_weight(*c->shares)});
    if (c->quota && *c->quota != 0) {
      uint64_t per_sec = kInfinity;
      if (*c->quota > 0) {
        uint64_t period = c->period && *c->period != 0 ? *c->period : 100000;
        // systemd keeps CPUQuota= in 1% steps (10 ms per second): round up as runc does
        per_sec = static_cast<uint64_t>(*c->quota) * 1000000 / period;
        per_sec = (per_sec + 9999) / 10000 * 10000;
      }
      p.push_back({"CPUQuotaPerSecUSec", per_sec});
    }
    if (c->period && *c->period != 0) p.push_back({"CPUQuotaPeriodUSec", *c->period});
  }
  if (const auto& b = r.block_io; b && b->weight && *b->weight != 0)
    p.push_back({"IOWeight", blkio_weight_to_io_weight(*b->weight)});
  return p;
}

std::vector<systemd::Property> scope_properties(const std::string& slice,
                                                const std::string& description, bool v2,
                                                const oci::Resources* res) {
  std::vector<systemd::Property> p = {
      {"Description", description},
      {"Slice", slice},
      {"Delegate", true},
      // no ordering against shutdown.target & co: a container must not hold up a shutdown
      {"DefaultDependencies", false},
      // a scope that failed is removed as soon as it stops, so its name can be used again
      {"CollectMode", std::string("inactive-or-failed")},
      {"MemoryAccounting", true},
      {"TasksAccounting", true},
  };
  if (res) std::ranges::move(limit_properties(v2, *res), std::back_inserter(p));
  return p;
}

}  // namespace cgroups_internal

namespace {

class SystemdManager final : public CgroupManager {
 public:
  SystemdManager(std::string unit, std::string slice, std::string description, bool v2,
                 std::unique_ptr<CgroupManager> files)
      : unit_(std::move(unit)),
        slice_(std::move(slice)),
        description_(std::move(description)),
        v2_(v2),
        files_(std::move(files)) {}

  nlohmann::json save() const override {
    return {{"systemd", {{"unit", unit_}, {"slice", slice_}, {"v2", v2_}}},
            {"files", files_->save()}};
  }

  void validate(const oci::Resources& res) const override {
    files_->validate(res);
    limit_properties(v2_, res);  // throws on values systemd cannot take
  }

  void apply(pid_t pid, const oci::Resources* res) override {
    systemd::Bus bus;
    bus.start_transient_unit(unit_, pid, scope_properties(slice_, description_, v2_, res));
    files_->apply(pid, res);
  }

  void add_process(pid_t pid, pid_t init_pid) override { files_->add_process(pid, init_pid); }

  void update(const oci::Resources& res) override {
    systemd::Bus().set_unit_properties(unit_, limit_properties(v2_, res));
    files_->update(res);
  }

  void delegate(uid_t uid, gid_t gid) override { files_->delegate(uid, gid); }
  void freeze() override { files_->freeze(); }
  void thaw() override { files_->thaw(); }
  bool frozen() const override { return files_->frozen(); }
  std::vector<pid_t> pids() const override { return files_->pids(); }

  void destroy() noexcept override {
    // Kill what is left first: StopUnit would SIGTERM and wait up to 90 s.
    try {
      std::string dir = files_->unified_path();
      if (!dir.empty() && path_exists(dir + "/cgroup.kill")) {
        write_raw(dir + "/cgroup.kill", "1");
      } else {
        for (pid_t p : files_->pids()) ::kill(p, SIGKILL);
      }
      wait_until(
          "wait for " + unit_ + " to empty", [&] { return files_->pids().empty(); },
          std::chrono::seconds(2));
    } catch (const std::exception& e) {
      log::debug(std::string("cgroup destroy: ") + e.what());
    }
    try {
      systemd::Bus().stop_unit(unit_);
    } catch (const std::exception& e) {
      log::debug(e.what());
    }
    files_->destroy();
  }

  std::string unified_path() const override { return files_->unified_path(); }

 private:
  std::string unit_, slice_, description_;
  bool v2_;
  std::unique_ptr<CgroupManager> files_;
};

}  // namespace

namespace cgroups_internal {

std::unique_ptr<CgroupManager> make_systemd_manager(const std::string& cgroups_path,
                                                    const std::string& container_id,
                                                    CgroupLayout layout,
                                                    const std::vector<CgroupMount>& mounts,
                                                    const std::map<std::string, std::string>& own,
                                                    const std::string& mount_root) {
  std::string path = cgroups_path.empty() ? "system.slice:racker:" + container_id : cgroups_path;
  auto scope = systemd::parse_scope_path(path);
  std::string inner = expand_slice(scope.slice) + "/" + scope.unit;
  auto dirs = resolve_cgroup_dirs(layout, mounts, own, inner, mount_root);
  auto files = make_cgroupfs_manager(layout, std::move(dirs.v1), std::move(dirs.unified), false);
  return std::make_unique<SystemdManager>(scope.unit, scope.slice,
                                          "racker container " + container_id,
                                          layout == CgroupLayout::v2, std::move(files));
}

std::unique_ptr<CgroupManager> load_systemd_manager(const nlohmann::json& saved) {
  const auto& s = saved.at("systemd");
  auto files = CgroupManager::load(saved.at("files"));
  return std::make_unique<SystemdManager>(s.at("unit").get<std::string>(),
                                          s.at("slice").get<std::string>(), "",
                                          s.value("v2", false), std::move(files));
}

}  // namespace cgroups_internal

}  // namespace racker::runtime
