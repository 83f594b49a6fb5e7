// Builds a container's OCI config.json from an image config and docker-style run flags.
// Pure: no host access, so it is unit-tested without root.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/ports.hpp"
#include "engine/seccomp_profile.hpp"

namespace racker::engine {

// The container's name in its config.json: the runtime knows it by its id (its state under the
// state root, its cgroup); racker-oci list and machinectl show this.
inline constexpr const char* kNameAnnotation = "org.racker.container.name";

struct VolumeSpec {
  std::string source;       // host path
  std::string destination;  // in the container
  bool readonly = false;
};

struct RunFlags {
  std::vector<std::string> args;                       // after the image name, untouched
  std::optional<std::vector<std::string>> entrypoint;  // --entrypoint ("" = none)
  std::vector<std::string> env;  // -e / --env-file, KEY=VALUE or KEY (taken from host env)
  std::string workdir;
  std::string user;  // uid[:gid] or name[:group] (names resolved by the caller)
  std::string hostname;
  std::string network = "private";   // host | none | private
  std::vector<PortMapping> publish;  // -p: into a private network (engine/ports.hpp)
  bool tty = false;
  bool read_only = false;
  bool privileged = false;
  std::string userns;     // --userns: "auto", "host"; "" = host, auto for booted OS containers
  bool init = false;      // --init: a small init as PID 1 that reaps zombies, forwards signals
  std::string init_path;  // the host binary for --init (found by the caller: find_init_binary)
  std::vector<std::string> cap_add, cap_drop;
  std::vector<VolumeSpec> volumes;
  std::vector<std::string> tmpfs;  // DST[:options]
  std::optional<int64_t> memory;   // bytes
  std::optional<double> cpus;
  std::optional<int64_t> pids_limit;
  // --security-opt: seccomp=unconfined|FILE (--privileged: unconfined), no-new-privileges;
  // security_opt as given, for racker inspect
  SeccompChoice seccomp;
  bool no_new_privileges = false;
  std::vector<std::string> security_opt;
  // not a flag: set by the engine where systemd runs, which then places the container in a
  // transient scope machine.slice/racker-<id>.scope (as nspawn and podman do)
  bool systemd_cgroup = false;
};

// The seccomp choice in effect: --privileged runs unconfined, as in docker.
SeccompChoice effective_seccomp(const RunFlags& flags);

// Where --init's binary is mounted in the container.
inline constexpr const char* kInitPath = "/sbin/racker-init";
// A static init for --init on this host (tini-static, docker-init, catatonit); "" when none.
std::string find_init_binary();

// Docker's default capability set for containers.
const std::vector<std::string>& default_capabilities();

// Parses "512m", "1g", "1024" (bytes) like docker's --memory. Throws racker::Error.
int64_t parse_memory(const std::string& s);
// "SRC:DST[:ro|rw]" -> VolumeSpec; SRC must be absolute. Throws racker::Error.
VolumeSpec parse_volume(const std::string& s);

struct BuiltSpec {
  nlohmann::json config;
  std::vector<std::string> process_args;
};

// image_config is the image's config JSON ("config" member: Entrypoint, Cmd, Env, WorkingDir,
// User, StopSignal). rootfs is the bundle's rootfs path. Throws racker::Error for flag errors
// (e.g. "no command: the image has no Cmd or Entrypoint and none was given").
BuiltSpec build_spec(const nlohmann::json& image_config, const RunFlags& flags,
                     const std::string& rootfs, const std::string& container_id,
                     const std::vector<std::pair<std::string, std::string>>& extra_binds);

}  // namespace racker::engine
