#include "engine/run.hpp"

#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <functional>
#include <tuple>

#include "base/clock.hpp"
#include "base/error.hpp"
#include "base/fs.hpp"
#include "base/log.hpp"
#include "base/strings.hpp"
#include "base/timing.hpp"
#include "engine/boot.hpp"
#include "engine/containers.hpp"
#include "engine/flat_rootfs.hpp"
#include "engine/foreign_arch.hpp"
#include "engine/idrange.hpp"
#include "engine/monitor.hpp"
#include "engine/network.hpp"
#include "engine/provision.hpp"
#include "engine/rootless.hpp"
#include "image/content_store.hpp"
#include "image/gc.hpp"
#include "image/image_store.hpp"
#include "oci/capabilities.hpp"
#include "runtime/caps.hpp"
#include "runtime/container.hpp"
#include "runtime/idmap.hpp"
#include "runtime/mounts.hpp"
#include "runtime/systemd_bus.hpp"

namespace racker::engine {
namespace {

std::optional<uint32_t> lookup(const std::string& file, const std::string& name, int field) {
  auto text = read_file_if_exists(file);
  if (!text) return std::nullopt;
  for (auto& line : split(*text, '\n')) {
    auto f = split(line, ':');
    if (f.size() > static_cast<size_t>(field) && f[0] == name)
      if (auto v = parse_uint(f[static_cast<size_t>(field)])) return static_cast<uint32_t>(*v);
  }
  return std::nullopt;
}

// The layers of a --userns=auto container, id-mapped to its range (a file of uid 0 on disk
// shows as the range's first uid) and attached at <dir>/idmap/<n> for the overlay mount, which
// keeps its own references: they are detached again when this goes.
struct IdMappedLayers {
  std::vector<std::string> paths;
  void map(const std::vector<std::string>& layers, const std::string& dir, const IdRange& r) {
    UniqueFd ns = runtime::make_userns({{0, r.uid, r.size}}, {{0, r.gid, r.size}});
    mkdir_p(dir + "/idmap", 0700);
    for (size_t i = 0; i < layers.size(); ++i) {
      std::string at = dir + "/idmap/" + std::to_string(i);
      mkdir_p(at, 0700);
      UniqueFd tree = runtime::clone_tree(layers[i], false, ns.get());
      runtime::attach_tree(tree.get(), at);
      paths.push_back(at);
    }
  }
  void detach() noexcept {
    for (auto& p : paths) ::umount2(p.c_str(), MNT_DETACH);
    paths.clear();
  }
  ~IdMappedLayers() { detach(); }
};

// The overlay of the image's layers with the container's upper dir, mounted at rootfs; true.
// throwaway (--rm): a "volatile" overlay, whose upper dir is never synced: no fsync per copy-up
// (every first write to an image file, e.g. during a boot) for a dir deleted at exit anyway.
// Where the kernel refuses the overlay (no overlayfs, a store on overlayfs itself, too many
// layers for one mount), the layers are copied into rootfs instead, with a warning; false.
bool mount_overlay(const image::ImageStore& images, const image::ImageRecord& rec,
                   const std::string& dir, bool throwaway, const std::optional<IdRange>& range) {
  std::string target = dir + "/rootfs";
  if (path_exists(dir + "/flat")) return false;  // copied before: the copy is the container
  std::vector<std::string> layers;               // lowest first
  for (auto& l : rec.layers) layers.push_back(images.layer_dir(l.chain_id) + "/fs");
  IdMappedLayers mapped;
  if (range && !layers.empty()) {
    try {
      mapped.map(layers, dir, *range);
    } catch (const Error& e) {
      if (e.err() != EINVAL && e.err() != EPERM && e.err() != ENOSYS && e.err() != EOPNOTSUPP)
        throw;
      log::warn(std::string("the kernel cannot id-map the image's layers (") + e.what() +
                "): copying them into the container with shifted owners instead (a full copy)");
      mapped.detach();
      flatten_layers(layers, target);
      shift_owners(target, *range);
      write_file_atomic(dir + "/flat", "");
      return false;
    }
  }
  const auto& lowers = range && !layers.empty() ? mapped.paths : layers;
  std::string lower;
  for (size_t i = lowers.size(); i-- > 0;) lower += (lower.empty() ? "" : ":") + lowers[i];
  if (lower.empty()) {
    mkdir_p(dir + "/empty");
    lower = dir + "/empty";
  }
  std::string data = "lowerdir=" + lower + ",upperdir=" + dir + "/upper,workdir=" + dir + "/work";
  // in a rootless namespace overlayfs keeps its metadata in user.overlay.* (trusted.* is the
  // host root's); the layers were unpacked with those too
  if (rootless()) data += ",userxattr";
  int err = E2BIG;
  if (data.size() < 4000) {
    // a volatile mount leaves work/incompat/volatile behind and the kernel refuses to mount
    // that upper dir again while it is there; a throwaway container's upper dir is reused only
    // when racker died before removing it, its content then is no more trustworthy than that
    if (!throwaway && ::unlink((dir + "/work/work/incompat/volatile/dirty").c_str()) == 0)
      ::rmdir((dir + "/work/work/incompat/volatile").c_str());
    if (throwaway &&
        ::mount("overlay", target.c_str(), "overlay", 0, (data + ",volatile").c_str()) == 0)
      return true;  // (kernels before 5.10 have no "volatile": EINVAL, mounted as usual below)
    if (::mount("overlay", target.c_str(), "overlay", 0, data.c_str()) == 0) return true;
    err = errno;
    if (err != EINVAL && err != ENODEV && err != EOPNOTSUPP)
      throw_errno("mount overlay rootfs at " + target, err);
  }
  log::warn("overlay mount of the image's layers at " + target + " refused (" + std::strerror(err) +
            "): copying the layers into the container instead (a full copy on disk)");
  flatten_layers(layers, target);
  if (range) shift_owners(target, *range);
  write_file_atomic(dir + "/flat", "");
  return false;
}

std::string host_resolv_conf() {
  // a systemd-resolved stub (127.0.0.53) is unreachable from another network namespace
  auto text = read_file_if_exists("/etc/resolv.conf");
  if (text && text->find("127.0.0.53") != std::string::npos) {
    if (auto real = read_file_if_exists("/run/systemd/resolve/resolv.conf")) return *real;
  }
  return text ? *text : "";
}

// The home directory of uid in the rootfs' /etc/passwd; "/" when it has none.
std::string home_of(const std::string& rootfs, uint32_t uid) {
  for (auto& line : split(read_file_if_exists(rootfs + "/etc/passwd").value_or(""), '\n')) {
    auto f = split(line, ':');
    if (f.size() > 5 && parse_uint(f[2]) == uid && !f[5].empty()) return f[5];
  }
  return "/";
}

// --privileged asks for every capability; this process can only give what its own bounding
// set holds (e.g. no CAP_SYS_RESOURCE on some hosts), as podman does.
void limit_to_host_capabilities(nlohmann::json& config) {
  uint64_t bounding = runtime::own_bounding_set();
  auto& caps = config["process"]["capabilities"];
  for (auto& [set, list] : caps.items()) {
    nlohmann::json kept = nlohmann::json::array();
    for (auto& c : list) {
      auto n = oci::capability_from_name(c.get<std::string>());
      if (n && (bounding >> *n) & 1) kept.push_back(c);
    }
    list = kept;
  }
}

}  // namespace

std::pair<uint32_t, uint32_t> resolve_user(const std::string& rootfs, const std::string& user) {
  if (user.empty()) return {0, 0};
  auto parts = split(user, ':');
  if (parts.size() > 2 || parts[0].empty()) throw Error("invalid user \"" + user + "\"", EINVAL);
  uint32_t uid, gid = 0;
  if (auto n = parse_uint(parts[0])) {
    uid = static_cast<uint32_t>(*n);
    gid = lookup(rootfs + "/etc/passwd", "", 3).value_or(0);  // numeric: group 0 unless given
    for (auto& line : split(read_file_if_exists(rootfs + "/etc/passwd").value_or(""), '\n')) {
      auto f = split(line, ':');
      if (f.size() > 3 && f[2] == parts[0])
        if (auto g = parse_uint(f[3])) gid = static_cast<uint32_t>(*g);
    }
  } else {
    auto u = lookup(rootfs + "/etc/passwd", parts[0], 2);
    if (!u)
      throw Error("unable to find user " + parts[0] + ": no matching entries in passwd file",
                  ENOENT, ErrorKind::not_found);
    uid = *u;
    gid = lookup(rootfs + "/etc/passwd", parts[0], 3).value_or(0);
  }
  if (parts.size() == 2) {
    if (auto n = parse_uint(parts[1])) {
      gid = static_cast<uint32_t>(*n);
    } else {
      auto g = lookup(rootfs + "/etc/group", parts[1], 2);
      if (!g)
        throw Error("unable to find group " + parts[1] + ": no matching entries in group file",
                    ENOENT, ErrorKind::not_found);
      gid = *g;
    }
  }
  return {uid, gid};
}

bool mount_rootfs(const image::ImageStore& images, const image::ImageRecord& rec,
                  const std::string& dir, bool throwaway, const std::optional<IdRange>& range) {
  return mount_overlay(images, rec, dir, throwaway, range);
}

std::optional<IdRange> range_of(const ContainerRecord& rec) {
  if (!rec.userns_size) return std::nullopt;
  return IdRange{rec.userns_uid, rec.userns_gid, rec.userns_size};
}

PreparedContainer::~PreparedContainer() {
  if (armed_) discard();
}

void PreparedContainer::release_mount_and_network() {
  if (!net_state_root.empty()) net::teardown(net_state_root, id);
  if (mounted) ::umount2(rootfs.c_str(), MNT_DETACH);
  mounted = false;
}

void PreparedContainer::discard() {
  armed_.disarm();
  release_mount_and_network();
  if (!keep_files && !cdir.empty()) {
    remove_tree(cdir);
    if (record.userns_size && !userns_state_root.empty())
      release_range(userns_state_root, range_of(record).value(), cdir);
  }
}

image::ImageRecord find_or_pull(const RunRequest& req) {
  image::ImageStore images(req.store_root);
  std::optional<image::ImageRecord> rec;
  if (req.pull != "always") rec = images.find(req.image);
  if (rec) return *rec;
  if (req.pull == "never")
    throw Error("image " + req.image + " not found (--pull never)", ENOENT, ErrorKind::not_found);
  if (req.pull != "always" && req.pull != "missing")
    throw Error("invalid --pull \"" + req.pull + "\": use always, missing or never", EINVAL,
                ErrorKind::invalid);
  image::ContentStore content(req.store_root);
  return image::pull_image(content, images, req.image, req.pull_options);
}

static std::unique_ptr<image::Lease> hold_image(const RunRequest& req, image::ImageRecord& rec) {
  auto lease = std::make_unique<image::Lease>(req.store_root);
  std::vector<std::string> refs = {rec.manifest_digest, rec.config_digest};
  for (auto& l : rec.layers) refs.push_back(l.chain_id);
  lease->add(refs);
  // removed between our look-up and the lease: look (or pull) again, now under the lease
  image::ImageStore images(req.store_root);
  bool whole = images.find(rec.id).has_value();
  for (auto& l : rec.layers) whole = whole && images.layer_complete(l.chain_id);
  if (!whole) rec = find_or_pull(req);
  return lease;
}

runtime::CreateOptions create_options(const std::string& bundle) {
  runtime::CreateOptions o;
  o.bundle = bundle;
  // (an ordinary user may not ask the system's manager for scopes)
  o.systemd_cgroup = runtime::systemd::booted() && !rootless();
  return o;
}

PreparedContainer prepare_container(const RunRequest& req, const image::ImageRecord& rec,
                                    const std::string& id) {
  image::ContentStore content(req.store_root);
  image::ImageStore images(req.store_root);
  PreparedContainer p;
  p.rec = rec;
  p.image_config = nlohmann::json::parse(content.read_blob(rec.config_digest));
  // another architecture's image runs through qemu-user, or says why it cannot
  if (p.image_config.contains("architecture") && p.image_config["architecture"].is_string())
    ensure_runnable_arch(p.image_config["architecture"].get<std::string>());
  p.id = id.empty() ? random_hex(64) : id;
  p.name = req.name.empty() ? "racker-" + p.id.substr(0, 12) : req.name;
  p.store_root = req.store_root;
  p.cdir = ContainerStore(req.store_root).dir_of(p.id);
  p.rootfs = p.cdir + "/rootfs";
  if (!req.name.empty()) {
    // docker: a name stays taken until the container is removed, also once it exited
    for (auto& c : ContainerStore(req.store_root, req.state_root).list())
      if (c.name() == req.name)
        throw Error("container name \"" + req.name + "\" is already in use", EEXIST,
                    ErrorKind::conflict);
  }
  mkdir_p(req.store_root + "/containers", 0700);
  try {
    for (auto* sub : {"/upper", "/work", "/rootfs"}) mkdir_p(p.cdir + sub, 0755);
    std::optional<IdRange> range;
    if (req.flags.userns == "auto") {
      if (rootless())
        throw Error(
            "--userns=auto needs root: an ordinary user's containers share the user's "
            "own namespace (your subordinate ids); use --userns=host",
            EINVAL, ErrorKind::invalid);
      if (req.flags.privileged)
        throw Error("--privileged needs the host's ids: use --userns=host", EINVAL,
                    ErrorKind::invalid);
      range = lease_range(req.state_root, p.cdir);
      p.userns_state_root = req.state_root;
      p.record.userns_uid = range->uid;
      p.record.userns_gid = range->gid;
      p.record.userns_size = range->size;
      // the init, root of its range, reaches the rootfs from this directory (runtime/idmap)
      if (::chmod(p.cdir.c_str(), 0711) != 0) throw_errno("chmod " + p.cdir);
      // the rootfs' top directory is the upper dir's: the container's root owns it
      if (::chown((p.cdir + "/upper").c_str(), range->uid, range->gid) != 0)
        throw_errno("chown " + p.cdir + "/upper");
    }
    auto owned = [&](const std::string& path, uint32_t uid = 0, uint32_t gid = 0) {
      if (range && ::lchown(path.c_str(), range->uid + uid, range->gid + gid) != 0)
        throw_errno("chown " + path);
    };
    p.mounted = mount_overlay(images, rec, p.cdir, req.remove, range);
    RunFlags flags = req.flags;
    flags.systemd_cgroup = runtime::systemd::booted() && !rootless();
    if (flags.init && flags.init_path.empty()) flags.init_path = find_init_binary();
    const std::string& cdir = p.cdir;
    std::string hostname = flags.hostname.empty() ? p.id.substr(0, 12) : flags.hostname;
    write_file_atomic(cdir + "/hostname", hostname + "\n");
    write_file_atomic(
        cdir + "/hosts",
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t" + hostname +
            "\n");
    std::string netns;
    if (flags.network == "private") {
      p.net_state_root = req.state_root;
      std::vector<PortMapping> ports = flags.publish;
      netns = net::setup_private(req.state_root, p.id, &ports).netns_path;
      p.record.publish = flags.publish;
      p.record.ports = ports;
    } else if (!flags.publish.empty()) {
      std::fprintf(stderr, "WARNING: published ports are discarded with --network %s\n",
                   flags.network.c_str());
    }
    write_file_atomic(cdir + "/resolv.conf",
                      netns.empty() ? host_resolv_conf() : net::resolv_conf_for_host());
    for (auto* f : {"/hostname", "/hosts", "/resolv.conf"}) owned(cdir + f);
    std::vector<std::pair<std::string, std::string>> binds = {
        {cdir + "/hostname", "/etc/hostname"},
        {cdir + "/hosts", "/etc/hosts"},
        {cdir + "/resolv.conf", "/etc/resolv.conf"}};
    p.built = build_spec(p.image_config, flags, p.rootfs, p.id, binds);
    if (!netns.empty()) net::join_netns(p.built.config, netns);
    if (range) {
      auto& lx = p.built.config["linux"];
      lx["namespaces"].push_back({{"type", "user"}});
      lx["uidMappings"] = {{{"containerID", 0}, {"hostID", range->uid}, {"size", range->size}}};
      lx["gidMappings"] = {{{"containerID", 0}, {"hostID", range->gid}, {"size", range->size}}};
    }
    const auto& ic = p.image_config;
    std::string user = !flags.user.empty() ? flags.user
                       : ic.contains("config") && ic["config"].is_object()
                           ? ic["config"].value("User", "")
                           : "";
    std::tie(p.uid, p.gid) = resolve_user(p.rootfs, user);
    auto& config = p.built.config;
    config["process"]["user"] = {{"uid", p.uid}, {"gid", p.gid}};
    auto& env = config["process"]["env"];
    bool has_home = false;
    for (auto& e : env) has_home |= e.get<std::string>().starts_with("HOME=");
    if (!has_home) env.push_back("HOME=" + home_of(p.rootfs, p.uid));
    // docker creates a missing working directory
    std::string cwd = config["process"]["cwd"];
    std::string cwd_host = runtime::secure_join(p.rootfs, cwd);
    if (!path_exists(cwd_host)) {
      mkdir_p(cwd_host, 0755);
      if (::chown(cwd_host.c_str(), p.uid, p.gid) != 0) throw_errno("chown " + cwd);
      owned(cwd_host, p.uid, p.gid);
    }
    if (flags.privileged) limit_to_host_capabilities(config);
    // the runtime knows the container by its id; its name for racker-oci list and machinectl
    config["annotations"][kNameAnnotation] = p.name;
    p.record.id = p.id;
    p.record.name = p.name;
    p.record.image = rec.names.empty() ? rec.id : rec.names[0];
    p.record.image_id = rec.id;
    p.record.created = now_rfc3339();
    p.record.command = p.built.process_args;
    p.record.security_opt = flags.security_opt;
    p.record.seccomp_profile = config["annotations"].value(kSeccompAnnotation, "");
    if (ic.contains("config") && ic["config"].is_object() && ic["config"].contains("StopSignal") &&
        ic["config"]["StopSignal"].is_string())
      p.record.stop_signal = ic["config"]["StopSignal"];
  } catch (const nlohmann::json::exception& e) {
    // a field of the image's config with the wrong type ("User": []); p rolls back
    throw Error("image " + (rec.names.empty() ? rec.id : rec.names[0]) +
                    ": malformed config: " + json_error_text(e.what()),
                EINVAL, ErrorKind::invalid);
  }
  return p;
}

void write_container_files(const PreparedContainer& p) {
  write_file_atomic(p.cdir + "/config.json", p.built.config.dump(2));
  ContainerStore(p.store_root).save(p.record);
}

std::string command_seccomp_file(const std::string& process_file) {
  std::string base = process_file;
  if (base.ends_with(".json")) base.resize(base.size() - 5);
  return base + "-seccomp.json";
}

namespace {

// The filter of config (a plain container's) next to process_file, for Runtime::exec; "" and
// no file when it runs unconfined.
std::string write_command_seccomp(const nlohmann::json& config, const std::string& process_file) {
  std::string path = command_seccomp_file(process_file);
  const auto& lx = config["linux"];
  if (!lx.contains("seccomp")) {
    ::unlink(path.c_str());
    return "";
  }
  write_file_atomic(path, lx["seccomp"].dump());
  return path;
}

}  // namespace

runtime::ExecOptions booted_command(const PreparedContainer& p, const RunFlags& flags,
                                    const std::string& process_file) {
  // the command runs with the process the plain container would have had (docker's
  // capabilities, the image's environment), not with the init's
  nlohmann::json proc = p.built.config["process"];
  proc["args"] = p.built.process_args;
  proc["terminal"] = flags.tty;
  write_file_atomic(process_file, proc.dump());
  runtime::ExecOptions o;
  o.process_file = process_file;
  o.tty = flags.tty;
  // and the seccomp filter of the plain container (docker's default), not the init's
  o.seccomp_file = write_command_seccomp(p.built.config, process_file);
  return o;
}

RunRequest with_boot_defaults(const RunRequest& req, bool boot) {
  RunRequest out = req;
  // a booted system gets a user namespace of its own, as LXD/Incus and nspawn -U give it
  // (an ordinary user's are in the user's namespace already)
  if (boot && out.flags.userns.empty() && !out.flags.privileged && !rootless())
    out.flags.userns = "auto";
  return out;
}

bool decide_boot(const RunRequest& req, image::ImageRecord& rec) {
  image::ImageStore images(req.store_root);
  // -d with a command on an OS image: the command as PID 1, as docker would run it; -d without
  // one: the system boots in the background
  bool boot = req.boot == RunRequest::Boot::yes ||
              (req.boot == RunRequest::Boot::automatic && (!req.detach || req.flags.args.empty()) &&
               image_is_os(images, rec));
  // systemd in an ordinary user's container needs a cgroup tree it may write (as under
  // systemd-nspawn -U): one below the cgroup delegated to the user
  if (boot && rootless() && delegated_cgroup().empty())
    throw Error(
        "booting an OS container as an ordinary user needs a cgroup delegated to you: run "
        "racker from your systemd user session (or systemd-run --user --scope racker ...), or "
        "use --no-boot",
        ENOTSUP, ErrorKind::invalid);
  if (!boot || image_has_systemd(images, rec)) return boot;
  ProvisionOptions po;
  po.store_root = req.store_root;
  po.state_root = req.state_root;
  po.on_status = [](const std::string& s) { std::fprintf(stderr, "%s\n", s.c_str()); };
  rec = ensure_systemd(rec, po);
  return true;
}

namespace {

// Starts the container whose bundle is cdir (config.json written) and, unless detach, waits
// for it: the runtime's part of run and start. Returns the payload's exit status.
// An image whose programs run through qemu-user (its config names another architecture).
bool emulated_image(const nlohmann::json& image_config) {
  if (!image_config.is_object()) return false;
  auto it = image_config.find("architecture");
  return it != image_config.end() && it->is_string() && !runs_natively(it->get<std::string>());
}

int launch(const std::string& state_root, const std::string& cdir, const std::string& id,
           bool detach, bool interactive,
           const std::function<int(runtime::Runtime&, const runtime::CreateOptions&)>& booted) {
  if (!interactive && !detach) ::dup2(open_dev_null().get(), 0);
  runtime::Runtime rt(state_root);
  runtime::CreateOptions opts = create_options(cdir);
  // -d: the payload inherits racker's stdout/stderr; point them at the container's log
  std::optional<Redirect> out, err;
  if (detach) {
    UniqueFd log = open_log(cdir + "/log");
    out.emplace(1, log.get());
    err.emplace(2, log.get());
  }
  try {
    return booted ? booted(rt, opts) : rt.run(id, opts, detach);
  } catch (const Error& e) {
    if (e.err() == EINTR && boot::interrupting_signal())
      throw Error::interrupted(e.what(), boot::interrupting_signal());
    throw;
  }
}

// After a foreground run: network and overlay released, the exit status recorded (or, with
// --rm, the container removed).
void finish(PreparedContainer& p, int status, bool remove) {
  if (remove) {
    p.discard();
    return;
  }
  p.keep_files = true;  // should the record not be saved, the container still stays
  p.release_mount_and_network();
  p.record.exit_code = status;
  ContainerStore(p.store_root).save(p.record);
  p.commit();
}

}  // namespace

int run_container(const RunRequest& req) {
  timing::mark("entry");  // process start (and a rootless user's namespaces) to here
  image::ImageRecord rec = find_or_pull(req);
  timing::mark("image");
  // until the container's meta.json names the image (rmi then refuses), a lease keeps
  // racker rmi / image prune from taking its layers away under us
  auto lease = hold_image(req, rec);
  bool boot = decide_boot(req, rec);
  if (boot && req.detach && !req.flags.args.empty())
    throw Error(
        "-d of a booted OS container takes no command: the system runs in the "
        "background, racker exec runs commands in it",
        EINVAL, ErrorKind::invalid);
  // should racker die from here on (kill -9), the monitor cleans up after it (monitor.hpp)
  std::string id = random_hex(64);
  RunMonitor monitor =
      RunMonitor::start(req.store_root, req.state_root, id, req.remove || req.detach);
  timing::mark("monitor");
  PreparedContainer p = prepare_container(with_boot_defaults(req, boot), rec, id);
  timing::mark("prepare");
  const std::string& cdir = p.cdir;
  UniqueFd notify;  // the boot's notify socket
  {
    std::function<int(runtime::Runtime&, const runtime::CreateOptions&)> booted;
    if (boot) {
      // command.json: also the base of `racker exec` in this container (exec_cp.cpp)
      runtime::ExecOptions boot_exec = booted_command(p, req.flags, cdir + "/command.json");
      std::string init = boot::find_init(p.rootfs);
      notify = boot::prepare_spec(p.built.config, cdir, init, effective_seccomp(req.flags));
      p.record.booted = true;
      bool emulated = emulated_image(p.image_config);
      if (req.detach) {
        p.record.command = {init};
        // systemd's halt: racker stop shuts it down (under qemu-user from inside, see stop)
        p.record.stop_signal = emulated ? "guest:SIGRTMIN+3" : "SIGRTMIN+3";
      }
      booted = [&, boot_exec, emulated](runtime::Runtime& rt, const runtime::CreateOptions& opts) {
        boot::BootOptions bo;
        bo.ready_timeout_ms = req.boot_timeout_s * 1000;
        bo.emulated = emulated;
        if (!req.detach) return boot::run_booted(rt, p.id, opts, cdir, notify.get(), boot_exec, bo);
        boot::start_and_wait(rt, p.id, opts, cdir, notify.get(), bo);  // its pidfd closed
        return 0;  // up; it keeps running without us
      };
    }
    write_container_files(p);
    timing::mark("files");
    int status = launch(req.state_root, cdir, p.id, req.detach, req.interactive, booted);
    if (!boot) timing::mark("payload");  // create, start, the payload's run, its exit
    if (req.detach) {
      p.commit();  // it runs on: racker stop / rm (and the monitor) own it now
      if (req.remove) monitor.hand_over();  // -d --rm: removed when it ends
      std::printf("%s\n", p.id.c_str());
      return 0;
    }
    finish(p, status, req.remove);
    if (!boot) {
      timing::mark("cleanup");
      timing::report();
    }
    return status;
  }
}

std::string create_container(const RunRequest& req) {
  image::ImageRecord rec = find_or_pull(req);
  // until the container's meta.json names the image (rmi then refuses), a lease keeps
  // racker rmi / image prune from taking its layers away under us
  auto lease = hold_image(req, rec);
  RunRequest foreground = req;
  foreground.detach = false;  // booted as racker run would boot it (start -a or start)
  bool boot = decide_boot(foreground, rec);
  PreparedContainer p = prepare_container(with_boot_defaults(req, boot), rec);
  p.record.never_started = true;
  p.record.interactive = req.interactive;
  if (boot) {
    // the command (default: the image's Cmd) runs inside the booted system with start -a
    booted_command(p, req.flags, p.cdir + "/command.json");
    boot::prepare_spec(p.built.config, p.cdir, boot::find_init(p.rootfs),
                       effective_seccomp(req.flags));  // socket closed
    p.record.booted = true;
    p.record.boot_timeout_s = req.boot_timeout_s;
  }
  write_container_files(p);
  p.commit();  // made: it keeps its mount and network until racker start or rm
  return p.id;
}

int start_container(const std::string& store_root, const std::string& state_root,
                    const std::string& name_or_id, bool attach, bool interactive) {
  ContainerStore store(store_root, state_root);
  ContainerEntry c = store.find(name_or_id);
  if (c.status == ContainerStatus::running || c.status == ContainerStatus::paused)
    return 0;                                                        // docker: nothing to do
  if (c.has_state) runtime::Runtime(state_root).remove(c.id, true);  // an exited -d run
  // should racker die while it starts or waits for the container, the monitor releases its
  // mount, network and runtime state once it has ended (a booted system at once); it stays
  RunMonitor monitor = RunMonitor::start(store_root, state_root, c.id, false);
  PreparedContainer p;
  p.keep_files = true;  // should starting it fail, it stays as it was (created or exited)
  p.id = c.id;
  p.name = c.name();
  p.store_root = store_root;
  p.cdir = c.dir;
  p.rootfs = c.dir + "/rootfs";
  p.record = c.rec;
  image::ImageStore images(store_root);
  auto rec = images.find(c.rec.image_id);
  if (!rec)
    throw Error(
        "container " + c.name() + ": its image " + c.rec.image + " is no longer in the store",
        ENOENT, ErrorKind::not_found);
  p.rec = *rec;
  p.image_config =
      nlohmann::json::parse(image::ContentStore(store_root).read_blob(rec->config_digest));
  auto config = nlohmann::json::parse(read_file(c.dir + "/config.json"));
  p.mounted =
      is_mount_point(p.rootfs) || mount_overlay(images, p.rec, p.cdir, false, range_of(p.record));
  // a private network namespace released when the container last exited: a new one
  for (auto& ns : config["linux"]["namespaces"]) {
    if (ns.value("type", "") != "network" || ns.value("path", "").empty()) continue;
    if (!path_exists(ns["path"].get<std::string>())) {
      std::vector<PortMapping> ports = p.record.publish;
      std::string netns = net::setup_private(state_root, p.id, &ports).netns_path;
      p.record.ports = ports;
      net::join_netns(config, netns);
      write_file_atomic(p.cdir + "/config.json", config.dump(2));
    }
    p.net_state_root = state_root;
  }
  p.record.never_started = false;
  p.record.exit_code.reset();
  store.save(p.record);
  {
    std::function<int(runtime::Runtime&, const runtime::CreateOptions&)> booted;
    UniqueFd notify;  // the boot's notify socket
    if (p.record.booted) {
      // an OS container: boot it; with -a run its command inside and shut down, as racker run
      notify = boot::bind_notify_socket(p.cdir, config);
      runtime::ExecOptions cmd;
      cmd.process_file = p.cdir + "/command.json";
      if (std::string f = command_seccomp_file(cmd.process_file); path_exists(f))
        cmd.seccomp_file = f;
      cmd.tty = nlohmann::json::parse(read_file(cmd.process_file)).value("terminal", false);
      bool emulated = emulated_image(p.image_config);
      p.record.stop_signal = emulated ? "guest:SIGRTMIN+3" : "SIGRTMIN+3";
      store.save(p.record);
      booted = [&, cmd, emulated](runtime::Runtime& rt, const runtime::CreateOptions& opts) {
        boot::BootOptions bo;
        bo.ready_timeout_ms = p.record.boot_timeout_s * 1000;
        bo.emulated = emulated;
        if (attach) return boot::run_booted(rt, p.id, opts, p.cdir, notify.get(), cmd, bo);
        boot::start_and_wait(rt, p.id, opts, p.cdir, notify.get(), bo);  // its pidfd closed
        return 0;
      };
    }
    int status = launch(state_root, p.cdir, p.id, !attach, attach && interactive, booted);
    if (!attach) {
      p.commit();  // it runs on
      return 0;
    }
    finish(p, status, false);
    return status;
  }
}

}  // namespace racker::engine
