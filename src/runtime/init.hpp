// The container init: the child the runtime clones. It joins and creates namespaces, builds
// the rootfs, waits on exec.fifo for `start`, then becomes the container's process. It never
// throws back into the runtime: failures go to the parent over the sync socket.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

#include "base/fd.hpp"
#include "oci/spec.hpp"
#include "runtime/seccomp.hpp"

namespace racker::runtime {

struct NamespaceJoin {
  int fd = -1;
  int nstype = 0;  // CLONE_NEW*
  std::string type;
};

struct InitContext {
  const oci::Spec* spec = nullptr;
  const oci::Process* process = nullptr;
  std::string rootfs;       // as the init reaches it (/proc/self/cwd/NAME in a user namespace)
  std::string rootfs_host;  // the absolute host path
  const std::vector<UniqueFd>* sources = nullptr;  // open_mount_sources
  std::string id;
  int sync_fd = -1;
  int state_dir_fd = -1;  // O_PATH fd of the state dir (exec.fifo lives there)
  int console_fd = -1;    // where to send the pty master, -1 without terminal
  bool no_pivot = false;
  bool no_new_keyring = false;
  // an unprivileged runtime writes the maps of the init's new user namespace after the
  // clone: the init stays dumpable (its /proc files the caller's) until told to go on
  bool dumpable_until_go = false;
  int preserve_fds = 0;
  std::vector<NamespaceJoin> joins;  // user first, mount last
  int unshare_flags = 0;             // namespaces created after joining (when userns joined)
  bool has_mount_ns = false;
  bool has_uts_ns = false;
  bool in_user_ns = false;
  bool new_cgroup_ns = false;
  const SeccompProgram* seccomp = nullptr;
};

[[noreturn]] void container_init(const InitContext& ctx);

// Shared by init and exec: everything between "in the right namespaces" and execve —
// rlimits, user, capabilities, no_new_privs, seccomp, fd hygiene. `state_json` feeds the
// seccomp listener. Throws racker::Error; returns only if execve failed (it throws then).
struct ProcessSetup {
  const oci::Process* process = nullptr;
  const SeccompProgram* seccomp = nullptr;
  int preserve_fds = 0;
  std::vector<int> keep_fds;  // fds to keep open across the final close (besides preserved)
  std::string state_json;
};

// A sealed memfd holding the exec stub (exec_stub.S). The payload is executed through it so
// that /proc/self/exe is never the host's binary. Returns -errno on failure. No allocation.
int make_exec_stub_fd();
// Everything but a seccomp filter that needs no_new_privs (that one must be the very last
// step before execve: install_late_seccomp).
void finish_process_setup(const ProcessSetup& setup);
void install_late_seccomp(const ProcessSetup& setup);
// Executes the payload through the exec stub in stub_fd (or directly if stub_fd < 0 or the
// seccomp profile forbids execveat). Throws racker::Error when it cannot.
[[noreturn]] void exec_process(const oci::Process& process, int stub_fd);
// Resolves args[0] against PATH of the process env; throws racker::Error if not found.
std::string find_executable(const oci::Process& process);
// The process with runc's HOME rule applied: when its env has no HOME (or an empty one), HOME
// is the home directory of the first entry for its uid in the container's /etc/passwd, "/"
// without one. dockerd and containerd send no HOME and rely on it. Call inside the container's
// root, before the user changes.
oci::Process with_home(const oci::Process& process);

}  // namespace racker::runtime
