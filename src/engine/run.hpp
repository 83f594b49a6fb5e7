// `racker run`: image lookup (pull if missing) -> container dir -> overlay rootfs from the
// layer chain -> config.json from the image config and flags -> the runtime in process ->
// exit status -> cleanup.
#pragma once

#include <string>

#include "base/error.hpp"
#include "engine/spec_builder.hpp"
#include "image/puller.hpp"

namespace racker::engine {

struct RunRequest {
  std::string image;
  RunFlags flags;
  std::string name;
  bool remove = false;           // --rm
  bool detach = false;           // -d
  bool interactive = false;      // -i: keep stdin
  bool boot = false;             // --boot: systemd as PID 1, the command runs inside (boot.hpp)
  int boot_timeout_s = 30;       // --boot-timeout: READY=1 deadline
  std::string pull = "missing";  // always | missing | never
  std::string store_root = "/var/lib/racker";
  std::string state_root = "/run/racker";
  image::PullOptions pull_options;
};

// Runs a container; returns the payload's exit status (128+N for a signal). Throws
// racker::Error for racker's own failures; RunError carries docker's 125/126/127 codes.
int run_container(const RunRequest& req);

struct RunError : Error {
  RunError(const std::string& msg, int err, int exit_code)
      : Error(msg, err), exit_code(exit_code) {}
  int exit_code;
};

// "uid[:gid]" or "name[:group]" resolved with the rootfs' /etc/passwd and /etc/group.
std::pair<uint32_t, uint32_t> resolve_user(const std::string& rootfs, const std::string& user);

}  // namespace racker::engine
