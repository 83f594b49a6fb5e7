// Talking to systemd (PID 1) and systemd-machined over D-Bus, for hosts where systemd owns the
// cgroup tree: transient scopes with delegation (what runc's systemd driver, podman and nspawn
// create), unit properties for resource limits, machine registration. libsystemd's sd-bus is
// loaded with dlopen() on first use, so hosts and commands that never need it do not load it.
// Nothing here is used on a host whose PID 1 is not systemd.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <variant>
#include <vector>

struct sd_bus;

namespace racker::runtime::systemd {

// Whether the host was booted with systemd (sd_booted(): /run/systemd/system is a directory).
bool booted();

// One unit property as StartTransientUnit / SetUnitProperties take it: (sv).
struct Property {
  using value_type = std::variant<bool, uint64_t, std::string, std::vector<uint32_t>>;
  std::string name;
  value_type value;
  bool operator==(const Property&) const = default;
};

// A "slice:prefix:name" cgroupsPath (runc's systemd syntax) as unit names.
struct ScopeName {
  std::string slice;  // "system.slice" when the path leaves it empty
  std::string unit;   // "prefix-name.scope" ("name.scope" without prefix)
};
// Parses path; throws racker::Error naming it when it is not in that form or names a slice.
ScopeName parse_scope_path(const std::string& path);

// A connection to the system bus (or, when no D-Bus daemon runs, systemd's private socket).
class Bus {
 public:
  // Throws racker::Error when libsystemd cannot be loaded or no bus can be reached.
  Bus();
  ~Bus();
  Bus(const Bus&) = delete;
  Bus& operator=(const Bus&) = delete;

  // StartTransientUnit(unit, "fail", props + PIDs=[pid]) and waits for its job to finish.
  // Throws racker::Error naming the unit (e.g. "... already exists").
  void start_transient_unit(const std::string& unit, pid_t pid, const std::vector<Property>& props,
                            std::chrono::milliseconds timeout = std::chrono::seconds(10));
  // SetUnitProperties(unit, runtime=true, props).
  void set_unit_properties(const std::string& unit, const std::vector<Property>& props);
  // StopUnit(unit, "replace") and waits for its job; false when there is no such unit.
  bool stop_unit(const std::string& unit,
                 std::chrono::milliseconds timeout = std::chrono::seconds(10));
  // systemd-machined's RegisterMachine for a container whose leader is pid (its unit is the
  // scope the leader is in). Throws racker::Error (e.g. when machined is not installed).
  void register_machine(const std::string& name, pid_t leader, const std::string& root_directory);

 private:
  void wait_job(const std::string& job, const std::string& what, std::chrono::milliseconds timeout);
  sd_bus* bus_ = nullptr;
  struct Jobs;
  std::unique_ptr<Jobs> jobs_;  // JobRemoved signals seen (subscribed before any job is queued)
};

// A machine name systemd-machined accepts (hostname characters, at most 64) made from name.
std::string machine_name(const std::string& name);

}  // namespace racker::runtime::systemd
