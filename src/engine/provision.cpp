#include "engine/provision.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include <nlohmann/json.hpp>

#include "base/error.hpp"
#include "base/file_lock.hpp"
#include "base/fs.hpp"
#include "base/log.hpp"
#include "base/strings.hpp"
#include "engine/boot.hpp"
#include "engine/package_managers.hpp"
#include "engine/run.hpp"
#include "image/bake.hpp"
#include "image/content_store.hpp"
#include "image/digest.hpp"
#include "image/importer.hpp"
#include "image/manifest.hpp"
#include "runtime/container.hpp"
#include "runtime/mounts.hpp"

namespace racker::engine {
namespace {

using nlohmann::json;

bool exists_in(const std::string& root, const std::string& path) {
  struct stat st;
  return ::fstatat(AT_FDCWD, runtime::secure_join(root, path).c_str(), &st, AT_SYMLINK_NOFOLLOW) ==
         0;
}

// The layers' fs dirs, top layer first.
std::vector<std::string> layer_roots(const image::ImageStore& images,
                                     const image::ImageRecord& rec) {
  std::vector<std::string> out;
  for (size_t i = rec.layers.size(); i-- > 0;)
    out.push_back(images.layer_dir(rec.layers[i].chain_id) + "/fs");
  return out;
}

bool in_any_layer(const std::vector<std::string>& roots, const std::string& path) {
  return std::any_of(roots.begin(), roots.end(),
                     [&](const std::string& r) { return exists_in(r, path); });
}

std::string manager_of_layers(const std::vector<std::string>& roots) {
  for (auto& m : package_managers())
    if (in_any_layer(roots, m.detect)) return m.name;
  return "";
}

// overlayfs' upper dir -> a layer diff: whiteout devices become .wh.<name> files, opaque
// directories get a .wh..wh..opq entry (OCI image spec, "Whiteouts").
void overlay_to_diff(const std::string& dir) {
  auto names = dir_names(dir);
  char v[8];
  ssize_t vn = ::lgetxattr(dir.c_str(), "trusted.overlay.opaque", v, sizeof v);
  if (vn == 1 && v[0] == 'y') {
    ::lremovexattr(dir.c_str(), "trusted.overlay.opaque");
    write_file_atomic(dir + "/.wh..wh..opq", "", 0644);
  }
  for (auto& n : names) {
    std::string p = dir + "/" + n;
    struct stat st;
    if (::lstat(p.c_str(), &st) != 0) throw_errno("lstat " + p);
    if (S_ISCHR(st.st_mode) && st.st_rdev == makedev(0, 0)) {
      if (::unlink(p.c_str()) != 0) throw_errno("unlink " + p);
      write_file_atomic(dir + "/.wh." + n, "", 0644);
    } else if (S_ISDIR(st.st_mode)) {
      overlay_to_diff(p);
    }
  }
}

std::string derived_name(const image::ImageRecord& base, const std::vector<std::string>& extra,
                         const std::vector<std::string>& commands) {
  std::string hex = base.id.substr(base.id.find(':') + 1, 12);
  std::string name = "racker.local/provisioned/" + hex;
  if (!extra.empty() || !commands.empty()) {
    auto sorted = extra;
    std::sort(sorted.begin(), sorted.end());
    std::string all;
    for (auto& p : sorted) all += p + "\n";
    for (auto& c : commands) all += "$ " + c + "\n";
    name += "-" + image::sha256_digest(all).substr(7, 8);
  }
  return name + ":latest";
}

}  // namespace

std::string detect_package_manager(const std::string& rootfs) {
  return manager_of_layers({rootfs});
}

bool image_has_systemd(const image::ImageStore& images, const image::ImageRecord& rec) {
  auto roots = layer_roots(images, rec);
  return in_any_layer(roots, "/usr/lib/systemd/systemd") ||
         in_any_layer(roots, "/lib/systemd/systemd");
}

bool image_is_os(const image::ImageStore& images, const image::ImageRecord& rec) {
  auto roots = layer_roots(images, rec);
  return (in_any_layer(roots, "/etc/os-release") || in_any_layer(roots, "/usr/lib/os-release")) &&
         !manager_of_layers(roots).empty();
}

image::ImageRecord ensure_systemd(const image::ImageRecord& base, const ProvisionOptions& o) {
  image::ContentStore content(o.store_root);
  image::ImageStore images(o.store_root);
  if (o.extra_packages.empty() && o.extra_commands.empty() && !o.force &&
      image_has_systemd(images, base))
    return base;
  std::string name = derived_name(base, o.extra_packages, o.extra_commands);
  auto status = [&](const std::string& s) {
    if (o.on_status) o.on_status(s);
  };
  if (!o.force)
    if (auto rec = images.find(name)) return *rec;
  mkdir_p(o.store_root + "/provision", 0700);
  FileLock lock(o.store_root + "/provision/" + base.id.substr(base.id.find(':') + 1) + ".lock",
                FileLock::File::transient);
  if (!o.force)
    if (auto rec = images.find(name)) return *rec;  // made while we waited for the lock

  std::string pm = manager_of_layers(layer_roots(images, base));
  std::string what = "provision systemd into " + (base.names.empty() ? base.id : base.names[0]);
  if (pm.empty())
    throw Error(
        what + ": the image has no supported package manager (" + package_manager_names() + ")",
        ENOTSUP);
  std::string script = provision_script(package_manager(pm), o.extra_packages);
  for (auto& c : o.extra_commands) script += "; " + c;
  status("provisioning systemd into " + (base.names.empty() ? base.id : base.names[0]) + " with " +
         pm + " (once; stored as " + name + ")");

  RunRequest req;
  req.image = base.id;
  req.store_root = o.store_root;
  req.state_root = o.state_root;
  req.pull = "never";
  req.flags.network = "host";
  req.flags.entrypoint = std::vector<std::string>{};
  req.flags.args = {"/bin/sh", "-c", script};
  req.flags.user = "0:0";
  req.flags.workdir = "/";
  PreparedContainer p = prepare_container(req, base);  // a throwaway: it always goes
  {
    write_container_files(p);
    runtime::Runtime rt(o.state_root);
    runtime::CreateOptions copts = create_options(p.cdir);
    copts.kill_on_interrupt = true;  // Ctrl-C ends provisioning at once (its sh ignores it)
    std::string log_path = p.cdir + "/provision.log";
    int rc = boot::with_stdio_to(log_path, [&] { return rt.run(p.id, copts, false); });
    if (rc != 0)
      throw Error(what + ": `" + script + "` failed with exit status " + std::to_string(rc) +
                      "; last lines:" + boot::file_tail(log_path, 15),
                  EIO);
    if (::umount2(p.rootfs.c_str(), MNT_DETACH) != 0) throw_errno("umount " + p.rootfs);
    p.mounted = false;
    std::string upper = p.cdir + "/upper";
    // the runtime's mount points for /etc/{hostname,hosts,resolv.conf} stay the image's
    for (auto* f : {"/etc/hostname", "/etc/hosts", "/etc/resolv.conf"}) {
      struct stat st;
      std::string up = upper + f;
      if (::lstat(up.c_str(), &st) == 0 && S_ISREG(st.st_mode) && st.st_size == 0)
        ::unlink(up.c_str());
    }
    overlay_to_diff(upper);
    status("storing the provisioned layer");
    image::LayerBlob layer = image::tree_to_layer(upper, content, content.root() + "/ingest");

    json cfg = json::parse(content.read_blob(base.config_digest));
    cfg["rootfs"]["diff_ids"].push_back(layer.diff_id);
    if (!cfg.contains("history") || !cfg["history"].is_array()) cfg["history"] = json::array();
    cfg["history"].push_back({{"created_by", "racker provision (" + pm + "): " + script}});
    std::string cfg_body = cfg.dump();
    std::string cfg_digest = content.put_blob(cfg_body);
    json layers = json::array();
    for (auto& l : base.layers)
      layers.push_back({{"mediaType", l.media_type}, {"digest", l.digest}, {"size", l.size}});
    layers.push_back({{"mediaType", "application/vnd.oci.image.layer.v1.tar+gzip"},
                      {"digest", layer.digest},
                      {"size", layer.size}});
    json manifest = {{"schemaVersion", 2},
                     {"mediaType", image::media::oci_manifest},
                     {"config",
                      {{"mediaType", image::media::oci_config},
                       {"digest", cfg_digest},
                       {"size", cfg_body.size()}}},
                     {"layers", layers}};
    auto imported = image::import_images(content, images, {{manifest.dump(), "", {name}, nullptr}},
                                         image::host_platform());
    return imported.at(0).record;
  }
}

}  // namespace racker::engine
