// `racker run`: image lookup (pull if missing) -> container dir -> overlay rootfs from the
// layer chain -> config.json from the image config and flags -> the runtime in process ->
// exit status -> cleanup.
#pragma once

#include <string>
#include <utility>

#include <nlohmann/json.hpp>

#include "base/error.hpp"
#include "engine/containers.hpp"
#include "engine/idrange.hpp"
#include "engine/rootless.hpp"
#include "engine/spec_builder.hpp"
#include "image/image_store.hpp"
#include "image/puller.hpp"
#include "runtime/container.hpp"

namespace racker::engine {

struct RunRequest {
  std::string image;
  RunFlags flags;
  std::string name;
  bool remove = false;       // --rm
  bool detach = false;       // -d
  bool interactive = false;  // -i: keep stdin
  // --boot / --no-boot; automatic: boot distribution images (an /etc/os-release and a package
  // manager), provisioning systemd first when the image lacks it (provision.hpp)
  enum class Boot { automatic, yes, no } boot = Boot::automatic;
  int boot_timeout_s = 30;       // --boot-timeout: READY=1 deadline
  std::string pull = "missing";  // always | missing | never
  std::string store_root = engine::default_store_root();
  std::string state_root = engine::default_state_root();
  image::PullOptions pull_options;
};

// Runs a container; returns the payload's exit status (128+N for a signal). Throws
// racker::Error for racker's own failures (its kind gives docker's 125/126/127/128+N).
int run_container(const RunRequest& req);

// racker create: the container's rootfs and config made, nothing started
// (ContainerRecord::never_started). Returns its id. Booted OS containers cannot be created yet.
std::string create_container(const RunRequest& req);
// racker start: runs a created or exited container again (its upper dir kept). attach: waits
// and returns its exit status; else detaches (output to its log) and returns 0. A running
// container is left alone.
int start_container(const std::string& store_root, const std::string& state_root,
                    const std::string& name_or_id, bool attach, bool interactive);

// The steps of run_container that OsContainer shares (engine-internal). Until commit(), it
// rolls back what it made when it goes (an exception of any type on the way): everything of a
// new container, or, with keep_files (an existing container started again), its mount and
// network only.
struct PreparedContainer {
  std::string id, name, cdir, rootfs;
  std::string store_root;  // the ContainerStore it belongs to
  image::ImageRecord rec;
  nlohmann::json image_config;
  BuiltSpec built;         // config with user, HOME and cwd resolved; not written yet
  ContainerRecord record;  // its meta.json
  uint32_t uid = 0, gid = 0;
  bool mounted = false;
  bool keep_files = false;
  // set when it has a network namespace of its own (engine/network.hpp), which discard() and
  // the end of a foreground run tear down: the runtime state root it was made under
  std::string net_state_root;
  // where its --userns=auto range is leased (idrange.hpp); empty: none
  std::string userns_state_root;

  PreparedContainer() = default;
  PreparedContainer(PreparedContainer&&) = default;
  PreparedContainer& operator=(PreparedContainer&&) = default;
  ~PreparedContainer();

  // What it made belongs to the caller (a running container, a kept one) from here on.
  void commit() { armed_.disarm(); }
  // Releases the network and the overlay mount; with keep_files that is all, else the
  // container directory goes too. Never throws; idempotent.
  void discard();
  // The network and the overlay mount released (what a container that ended needs no more).
  void release_mount_and_network();

 private:
  // true until commit() or discard(); a moved-from object has nothing to roll back
  class Duty {
   public:
    Duty() = default;
    Duty(Duty&& o) noexcept : armed_(std::exchange(o.armed_, false)) {}
    Duty& operator=(Duty&& o) noexcept {
      armed_ = std::exchange(o.armed_, false);
      return *this;
    }
    explicit operator bool() const { return armed_; }
    void disarm() { armed_ = false; }

   private:
    bool armed_ = true;
  };
  Duty armed_;
};

// The image named by req.image: from the store, or pulled (req.pull).
image::ImageRecord find_or_pull(const RunRequest& req);
// Container dir, overlay rootfs, hostname/hosts/resolv.conf, config built from the image and
// flags. On failure nothing is left behind.
PreparedContainer prepare_container(const RunRequest& req, const image::ImageRecord& rec,
                                    const std::string& id = "");
// Writes config.json and meta.json into the container dir.
void write_container_files(const PreparedContainer& p);
// How the runtime creates a container from bundle: through systemd's cgroup driver where
// systemd runs (build_spec then gave it a machine.slice scope), cgroupfs elsewhere.
runtime::CreateOptions create_options(const std::string& bundle);
// req with what a booted OS container gets by default (--userns=auto).
RunRequest with_boot_defaults(const RunRequest& req, bool boot);
// The overlay of rec's layers (id-mapped to range) with dir/upper at dir/rootfs; false where
// the layers were copied instead (the kernel refused the overlay; dir/flat marks it).
bool mount_rootfs(const image::ImageStore& images, const image::ImageRecord& rec,
                  const std::string& dir, bool throwaway, const std::optional<IdRange>& range);
// The id range of a --userns=auto container; nullopt for the host's ids.
std::optional<IdRange> range_of(const ContainerRecord& rec);

// Where the seccomp filter of a booted container's command lives, next to its process file
// (command.json -> command-seccomp.json); racker exec uses it too.
std::string command_seccomp_file(const std::string& process_file);

// "uid[:gid]" or "name[:group]" resolved with the rootfs' /etc/passwd and /etc/group.
std::pair<uint32_t, uint32_t> resolve_user(const std::string& rootfs, const std::string& user);

}  // namespace racker::engine
