// `racker exec` and `racker cp`: a new process in a running container (runtime::Runtime::exec),
// and copies between the host and a container's root filesystem.
//
// cp reaches a container's files through its overlay at <root>/containers/<id>/rootfs: a
// running (or exited -d) container still has it mounted; for a stopped container whose overlay
// is no longer mounted, racker enters a private mount namespace and mounts the overlay (the
// image's layers with the container's upper dir) there for the copy, so nothing outlives the
// command. Container paths are resolved with runtime::secure_join: symlinks in the container
// are followed inside its rootfs only; symlinks met while walking a tree are copied as links.
#pragma once

#include <string>
#include <vector>
#include "engine/rootless.hpp"

namespace racker::engine {

struct ExecRequest {
  std::string container;  // name, id or unique id prefix
  std::vector<std::string> args;
  std::vector<std::string> env;  // KEY=VALUE
  std::string workdir;
  std::string user;  // uid[:gid] or name[:group], resolved in the container's rootfs
  bool interactive = false;
  bool tty = false;
  bool detach = false;
  std::string store_root = engine::default_store_root();
  std::string state_root = engine::default_state_root();
};

// Runs the process; returns its exit status (128+N for a signal), 0 with detach. Throws
// racker::Error, its kind telling 125 (racker's failures), 126 (cannot execute) and 127
// (not found) apart.
int exec_in_container(const ExecRequest& req);

struct CopyRequest {
  std::string src;  // HOST_PATH or CONTAINER:PATH
  std::string dst;
  std::string store_root = engine::default_store_root();
  std::string state_root = engine::default_state_root();
};

// Copies a file or tree (modes and mtimes kept) with docker's rules: an existing directory as
// the destination receives SRC's basename; "SRC/." copies the directory's contents. Throws
// racker::Error.
void copy_files(const CopyRequest& req);

}  // namespace racker::engine
