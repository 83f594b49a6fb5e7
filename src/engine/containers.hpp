// The racker container store: <root>/containers/<id>/ (meta.json, config.json, log, overlay)
// joined with the runtime's state under the state root (keyed by the container id). Backs
// run, create, start, ps, logs, stop, kill, rm and inspect.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include "engine/ports.hpp"
#include "engine/rootless.hpp"

namespace racker::engine {

// What racker keeps of a container: <root>/containers/<id>/meta.json, written only by
// ContainerStore::save. Reading is tolerant: a missing or mistyped field takes its default.
struct ContainerRecord {
  std::string id;
  std::string name;
  std::string image;     // the reference it was made from (or the image id)
  std::string image_id;  // sha256:... of the image config: what rmi / prune count as used
  std::string created;   // RFC 3339
  std::vector<std::string> command;
  std::string stop_signal;       // the image's StopSignal, systemd's SIGRTMIN+3; empty: SIGTERM
  bool booted = false;           // an OS container: systemd is its PID 1
  int boot_timeout_s = 30;       // for racker start of a created OS container
  bool interactive = false;      // racker create -i: start -a forwards stdin
  bool never_started = false;    // made by racker create and not started yet
  std::optional<int> exit_code;  // of its last run
  // --userns=auto: host uid and gid of its root and the range's size (0: the host's ids)
  uint32_t userns_uid = 0, userns_gid = 0, userns_size = 0;
  std::vector<std::string> security_opt;  // --security-opt as given
  std::string seccomp_profile;  // its process' (a booted one's command's): default, a path, ...
  std::vector<PortMapping> publish;  // -p as asked (host port 0: any), for each start
  std::vector<PortMapping> ports;    // -p as bound by its last start

  nlohmann::json to_json() const;
  static ContainerRecord from_json(const nlohmann::json& j);
};

enum class ContainerStatus {
  created,  // racker create made it, or the runtime's init waits to be started
  running,
  paused,
  stopped,  // the runtime holds state of a process that ended
  exited,   // the runtime holds no state (a finished run)
};
const char* to_string(ContainerStatus s);

struct ContainerEntry {
  std::string id;
  std::string dir;  // <root>/containers/<id>
  ContainerRecord rec;
  ContainerStatus status = ContainerStatus::exited;
  int pid = 0;
  bool has_state = false;  // the runtime holds state for this container

  const std::string& name() const { return rec.name; }
  // (created without runtime state: made by `racker create`, never started)
  bool running() const {
    return status == ContainerStatus::running || status == ContainerStatus::paused ||
           (status == ContainerStatus::created && has_state);
  }
  // "Up", "Exited (N)" or "Exited"
  std::string status_text() const;
};

class ContainerStore {
 public:
  explicit ContainerStore(std::string store_root,
                          std::string state_root = engine::default_state_root());

  // Every container of the store, newest first.
  std::vector<ContainerEntry> list() const;
  // Full name, full id or unique id prefix. Throws racker::Error "no such container: X".
  ContainerEntry find(const std::string& name_or_id) const;
  ContainerEntry refresh(const ContainerEntry& c) const;
  // By full id, also one racker has not finished making (no meta.json, maybe no directory).
  ContainerEntry load(const std::string& id) const;

  // SIGTERM (or the image's StopSignal), SIGKILL after timeout_s. Returns true when it took
  // SIGKILL.
  bool stop(const ContainerEntry& c, int timeout_s) const;
  void kill(const ContainerEntry& c, int sig) const;
  // Refuses a running container unless force; removes runtime state (and cgroup), the
  // overlay mount and the container dir.
  void remove(const ContainerEntry& c, bool force) const;
  nlohmann::json inspect(const ContainerEntry& c) const;

  std::string log_path(const ContainerEntry& c) const { return c.dir + "/log"; }
  std::string dir_of(const std::string& id) const { return store_root_ + "/containers/" + id; }

  // Writes rec as the meta.json of its container (atomically).
  void save(const ContainerRecord& rec) const;
  // What only a running container needs goes: runtime state (and cgroup), network, the
  // overlay mount. Errors are logged, not thrown.
  void release_running_parts(const ContainerEntry& c) const;

 private:
  bool wait_stopped(const ContainerEntry& c, int timeout_ms) const;
  // network namespace and veth released, overlay unmounted
  void unmount_and_unplug(const ContainerEntry& c) const;

  std::string store_root_;
  std::string state_root_;
};

}  // namespace racker::engine
