// runtime/: the OCI runtime — create/start/kill/delete/exec/state of one bundle. Used in
// process by racker's engine and behind racker-oci's runc-compatible command line.
// It knows nothing of images, registries or the racker container store.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <vector>

#include "oci/spec.hpp"
#include "oci/state.hpp"
#include "runtime/state_store.hpp"

namespace racker::runtime {

struct CreateOptions {
  std::string bundle = ".";
  std::string pid_file;
  std::string console_socket;
  bool no_pivot = false;
  bool no_new_keyring = false;
  int preserve_fds = 0;
  // the systemd cgroup driver (runc's --systemd-cgroup): a transient scope where systemd runs
  bool systemd_cgroup = false;
  // run in the foreground: SIGINT/SIGTERM/SIGHUP to us SIGKILL the container and run throws
  // ErrorKind::interrupted, instead of being forwarded (for a throwaway container whose PID 1,
  // a shell, ignores them as a namespace's init does)
  bool kill_on_interrupt = false;
};

struct ExecOptions {
  std::string process_file;  // --process: a process JSON; else built from the fields below
  std::vector<std::string> args;
  std::vector<std::string> env;
  std::string cwd;
  std::string user;  // uid[:gid]
  std::vector<std::string> cap_add;
  bool tty = false;
  bool detach = false;
  std::string pid_file;
  std::string console_socket;
  int preserve_fds = 0;
  bool no_new_privs = false;
  // a linux.seccomp object (JSON) for this process instead of the container's: racker gives
  // the command it runs in a booted OS container the filter of a plain container
  std::string seccomp_file;
};

struct ContainerInfo {
  oci::State state;
  std::string rootfs;
  std::string created;
  std::string owner;
};

class Runtime {
 public:
  explicit Runtime(std::string state_root);

  void create(const std::string& id, const CreateOptions& opts);
  void start(const std::string& id);
  // create + start; waits for the container unless detach, then deletes it. Returns the exit
  // status (128+N for a signal), docker/runc style.
  int run(const std::string& id, const CreateOptions& opts, bool detach);
  oci::State state(const std::string& id) const;
  std::vector<ContainerInfo> list() const;
  void kill(const std::string& id, int signal, bool all);
  void remove(const std::string& id, bool force);
  int exec(const std::string& id, const ExecOptions& opts);
  std::vector<pid_t> pids(const std::string& id) const;
  void pause(const std::string& id);
  void resume(const std::string& id);

 private:
  struct Created;
  Created create_container(const std::string& id, const CreateOptions& opts, bool foreground);
  void release_init(const std::string& id, const ContainerRecord& rec);
  void cleanup(const std::string& id, const ContainerRecord& rec, bool run_poststop);
  ContainerRecord load(const std::string& id) const;
  std::string status_of(const ContainerRecord& rec) const;

  StateStore store_;
};

// Waits for a child of ours, forwarding SIGINT/SIGTERM/... to it; 128+N for a signal.
int wait_child_forwarding(pid_t child);
// With kill_on_interrupt, SIGINT/SIGTERM/SIGHUP SIGKILL target instead, and *interrupted
// (when given) gets the signal.
int wait_forwarding(pid_t child, pid_t target, bool kill_on_interrupt = false,
                    int* interrupted = nullptr);

// "KILL", "SIGKILL", "9" -> 9. Throws racker::Error for unknown names.
int parse_signal(const std::string& s);

}  // namespace racker::runtime
