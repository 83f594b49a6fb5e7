// The runtime's record of each container under its state root (default /run/racker-oci):
// <root>/<id>/state.json (written atomically), config.json (the spec as created), and
// exec.fifo while the container is created but not started.
#pragma once

#include <sys/types.h>

#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/clock.hpp"

namespace racker::runtime {

struct ContainerRecord {
  std::string id;
  std::string bundle;
  std::string rootfs;
  pid_t pid = 0;
  unsigned long long start_time = 0;  // field 22 of /proc/<pid>/stat, guards against pid reuse
  std::string created;                // RFC 3339
  std::string owner;
  std::map<std::string, std::string> annotations;
  nlohmann::json cgroup;  // CgroupManager::save()
  bool has_pid_ns = false;
};

class StateStore {
 public:
  explicit StateStore(std::string root) : root_(std::move(root)) {}
  const std::string& root() const { return root_; }
  std::string dir(const std::string& id) const { return root_ + "/" + id; }

  // Makes <root>/<id> holding first_file (unless empty) with content, atomically; throws
  // "container \"id\" already exists" if it does.
  void create_dir(const std::string& id, const std::string& first_file = "",
                  const std::string& content = "") const;
  void save(const ContainerRecord& rec) const;
  // nullopt if the container has no record (unknown id, or still being created).
  std::optional<ContainerRecord> load(const std::string& id) const;
  bool exists(const std::string& id) const;
  std::vector<std::string> ids() const;
  void remove(const std::string& id) const;
  // What a create killed while making <root>/<id> left (create_dir's "+new-<id>." dirs).
  void remove_partial(const std::string& id) const;

 private:
  std::string root_;
};

// Checks a container id: non-empty, [A-Za-z0-9_.-], not "." or "..". Throws racker::Error.
void validate_id(const std::string& id);

// Start time of pid from /proc/<pid>/stat; 0 if it does not exist or is a zombie.
unsigned long long process_start_time(pid_t pid);

}  // namespace racker::runtime
