#pragma once

#include <string>
#include <vector>
#include "engine/rootless.hpp"

namespace racker::cli {

struct RackerGlobals {
  std::string root;  // engine::default_store_root() unless given
  std::string registries_conf;
  std::string authfile;
  std::string certs_dir;
};

// Image commands: pull, images, rmi, tag, image inspect/prune. Each returns an exit status
// and throws racker::Error for failures.
int cmd_pull(const std::vector<std::string>& args, const RackerGlobals& g);
int cmd_images(const std::vector<std::string>& args, const RackerGlobals& g);
int cmd_rmi(const std::vector<std::string>& args, const RackerGlobals& g);
int cmd_tag(const std::vector<std::string>& args, const RackerGlobals& g);
int cmd_image_inspect(const std::vector<std::string>& args, const RackerGlobals& g);
int cmd_image_prune(const std::vector<std::string>& args, const RackerGlobals& g);
// racker run: exit status of the payload; racker::Error's kind gives 125/126/127
// (exit_status with ExitStyle::payload).
int cmd_run(const std::vector<std::string>& args, const RackerGlobals& g);
int cmd_create(const std::vector<std::string>& args, const RackerGlobals& g);
int cmd_start(const std::vector<std::string>& args, const RackerGlobals& g);

// Registry commands: login, logout, push (registry_cmds.cpp).
int cmd_login(const std::vector<std::string>& args, const RackerGlobals& g);
int cmd_logout(const std::vector<std::string>& args, const RackerGlobals& g);
int cmd_push(const std::vector<std::string>& args, const RackerGlobals& g);

// Archive commands: load, save, bake (archive_cmds.cpp).
int cmd_load(const std::vector<std::string>& args, const RackerGlobals& g);
int cmd_save(const std::vector<std::string>& args, const RackerGlobals& g);
int cmd_bake(const std::vector<std::string>& args, const RackerGlobals& g);

// Container commands: ps, logs, stop, kill, rm, inspect (container_cmds.cpp).
int cmd_ps(const std::vector<std::string>& args, const RackerGlobals& g);
int cmd_logs(const std::vector<std::string>& args, const RackerGlobals& g);
int cmd_stop(const std::vector<std::string>& args, const RackerGlobals& g);
int cmd_kill(const std::vector<std::string>& args, const RackerGlobals& g);
int cmd_rm(const std::vector<std::string>& args, const RackerGlobals& g);
int cmd_inspect(const std::vector<std::string>& args, const RackerGlobals& g);
int cmd_port(const std::vector<std::string>& args, const RackerGlobals& g);

// exec and cp (exec_cp_cmds.cpp); exec: the process's status, or 125/126/127.
int cmd_exec(const std::vector<std::string>& args, const RackerGlobals& g);
int cmd_cp(const std::vector<std::string>& args, const RackerGlobals& g);

}  // namespace racker::cli
