#pragma once

#include <string>
#include <vector>

namespace racker::cli {

struct GlobalOptions {
  std::string root = "/run/racker-oci";
  bool systemd_cgroup = false;
};

// Runs one verb with its own arguments; returns the process exit status.
// Throws racker::Error for failures (reported by main as one line, exit 1).
int run_command(const std::string& verb, const std::vector<std::string>& args,
                const GlobalOptions& global);
bool is_command(const std::string& verb);
// Commands that start processes in a container (need the sealed re-exec).
bool starts_processes(const std::string& verb);
std::string commands_help();

}  // namespace racker::cli
