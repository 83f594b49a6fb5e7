// An OS container as an object, for callers that do more than one thing in a booted system
// (postroj's pkgprobe): boot an image's systemd as PID 1, run commands in it, copy files in,
// reach its network namespace, then tear it down. `racker run --boot` is built on the same
// steps (boot.hpp).
#pragma once

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "engine/rootless.hpp"
#include "engine/spec_builder.hpp"

namespace racker::engine {

struct OsContainerOptions {
  std::string image;                // a reference or image id in the store (pulled if missing)
  std::string name;                 // "" = racker-<12 hex>
  std::string network = "private";  // host | none | private
  std::vector<VolumeSpec> volumes;  // binds into the container
  std::string hostname;             // "" = the name
  std::string store_root = engine::default_store_root();
  std::string state_root = engine::default_state_root();
  int ready_timeout_ms = 30000;
  // Tear down by SIGKILL of the whole container instead of a clean systemd shutdown: for
  // throwaway containers whose upper directory is deleted anyway.
  bool fast_teardown = false;
};

struct ExecResult {
  int status = 0;      // exit status, 128+N for a signal
  std::string output;  // stdout and stderr, interleaved
  bool timed_out = false;
};

class OsContainer {
 public:
  // Prepares the rootfs, boots the image's systemd and waits for READY=1 (or `systemctl
  // is-system-running` saying running/degraded). Throws racker::Error when the image has no
  // systemd or the system does not come up (the message ends with the last console lines);
  // nothing is left behind then.
  static std::unique_ptr<OsContainer> boot(const OsContainerOptions& o);
  ~OsContainer();  // tear_down() unless keep() was called
  OsContainer(const OsContainer&) = delete;
  OsContainer& operator=(const OsContainer&) = delete;

  // Runs args inside the booted system as root in / (docker's default capabilities and the
  // image's environment), output captured. timeout_ms > 0: killed after that long (status
  // 137, timed_out set).
  ExecResult exec(const std::vector<std::string>& args, int timeout_ms = 0);
  // Copies a host file into the container (parent directories made), mode preserved.
  void copy_in(const std::string& host_path, const std::string& container_path);

  const std::string& id() const;
  const std::string& name() const;
  pid_t init_pid() const;
  // /proc/<init pid>/ns/net: for checks run from the host inside the container's network.
  std::string netns_path() const;
  long ready_ms() const;  // boot to ready

  // Leaves the container running when this object goes away (`racker ps` shows it, `racker
  // rm -f` removes it).
  void keep();
  // Shuts the system down (or kills it with fast_teardown) and removes everything it made.
  // Idempotent; never throws (problems are logged).
  void tear_down();

  // SIGINT, SIGTERM and SIGHUP from now on: every booted OsContainer of this process is
  // killed at once (its exec() calls return), later boot() and exec() calls throw, and the
  // owners' tear_down() still cleans up; interrupted() then names the signal.
  static void tear_down_on_signals();
  static int interrupted();  // the signal received, 0 if none

  struct Impl;

 private:
  explicit OsContainer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace racker::engine
