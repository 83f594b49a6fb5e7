// Seccomp: config.json's linux.seccomp compiled to a classic BPF program with libseccomp in
// the parent (so every bad action, architecture, operator or flag is reported before any
// process exists), then installed in the container init just before exec. Like runc and crun,
// syscall names libseccomp does not know for the native architecture are skipped: profiles
// list syscalls newer (or older) than the host on purpose.
#pragma once

#include <linux/filter.h>

#include <string>
#include <vector>

#include "oci/spec.hpp"

namespace racker::runtime {

struct SeccompProgram {
  std::vector<sock_filter> bpf;
  unsigned flags = 0;           // SECCOMP_FILTER_FLAG_* for seccomp(2)
  bool wants_listener = false;  // some rule uses SCMP_ACT_NOTIFY
  std::string listener_path;
  std::string listener_metadata;
};

// Where compiled filters are cached (seccomp.cpp says why and how): the host root's in
// /run; an ordinary user's (also as root of a rootless racker's namespace) in
// $XDG_RUNTIME_DIR/racker-seccomp, none without one.
inline constexpr const char* kSeccompCacheDir = "/run/racker-seccomp";
std::string seccomp_cache_dir();

// Throws racker::Error "config.json: linux.seccomp.FIELD: problem" for bad input. A filter
// compiled before comes from the cache.
SeccompProgram compile_seccomp(const oci::Seccomp& seccomp);

// Runs in the container init (after fork): no allocation, no exceptions. Returns the
// notification listener fd (>= 0) if wants_listener, 0 on success otherwise, -errno on error.
int install_seccomp(const SeccompProgram& program);

// Sends a seccomp notify fd to the listener socket at path, with the container state JSON
// as payload (SCM_RIGHTS), as runc/crun do. Throws racker::Error.
void send_seccomp_listener(int listener_fd, const std::string& path, const std::string& state_json);

}  // namespace racker::runtime
