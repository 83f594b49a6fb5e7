// The racker container store: <root>/containers/<id>/ (meta.json, config.json, log, overlay)
// joined with the runtime's state under the state root (keyed by the container name). Backs
// ps, logs, stop, kill, rm and inspect.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace racker::engine {

struct ContainerEntry {
  std::string id;
  std::string name;
  std::string dir;      // <root>/containers/<id>
  nlohmann::json meta;  // meta.json
  // runtime status: running, created, paused, stopped; "exited" when the runtime has no
  // state for it (a finished foreground run)
  std::string status;
  int pid = 0;
  bool has_state = false;  // the runtime holds state for this container

  // ("created" without runtime state: made by `racker create`, never started)
  bool running() const {
    return status == "running" || status == "paused" || (status == "created" && has_state);
  }
  // "Up", "Exited (N)" or "Exited"
  std::string status_text() const;
};

class Containers {
 public:
  explicit Containers(std::string store_root, std::string state_root = "/run/racker");

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

 private:
  bool wait_stopped(const ContainerEntry& c, int timeout_ms) const;

  std::string store_root_;
  std::string state_root_;
};

}  // namespace racker::engine
