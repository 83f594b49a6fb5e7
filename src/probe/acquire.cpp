#include "probe/acquire.hpp"

#include <fcntl.h>
#include <unistd.h>

#include "base/error.hpp"
#include "base/fd.hpp"
#include "base/fs.hpp"
#include "base/strings.hpp"
#include "engine/foreign_arch.hpp"
#include "engine/package_managers.hpp"
#include "engine/provision.hpp"
#include "image/bake.hpp"
#include "image/content_store.hpp"
#include "image/digest.hpp"
#include "image/manifest.hpp"
#include "image/puller.hpp"
#include "image/reference.hpp"
#include "probe/fetch.hpp"

namespace racker::probe {

std::vector<std::string> bake_packages(const CatalogEntry& e) {
  return engine::package_manager(e.package_manager).systemd;
}

std::vector<std::string> probe_image_commands(const CatalogEntry& e) {
  // package lists, so that packages under test get their dependencies without a refresh
  std::vector<std::string> c = {engine::package_manager(e.package_manager).refresh};
  // a journal in memory: no flush to /var/log at every boot of a throwaway container
  c.push_back(
      "mkdir -p /etc/systemd/journald.conf.d && "
      "printf '[Journal]\\nStorage=volatile\\n' > /etc/systemd/journald.conf.d/postroj.conf");
  return c;
}

std::optional<image::ImageRecord> find_ready_image(const std::string& store_root,
                                                   const CatalogEntry& e, const std::string& arch) {
  image::ImageStore images(store_root);
  return images.find(image_name_for(e.label, arch));
}

std::string sha256sums_entry(const std::string& sums_text, const std::string& file_name) {
  for (auto& raw : split(sums_text, '\n')) {
    std::string line = trim(raw);
    if (line.size() < 66 || line[64] != ' ') continue;
    std::string hex = line.substr(0, 64);
    if (hex.find_first_not_of("0123456789abcdefABCDEF") != std::string::npos) continue;
    std::string name = line.substr(65);
    if (!name.empty() && (name[0] == '*' || name[0] == ' ')) name.erase(0, 1);  // binary/text
    if (name == file_name) {
      for (auto& c : hex) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      return hex;
    }
  }
  return "";
}

namespace {

// A tarball source: SHA256SUMS fetched afresh, the tarball downloaded (resuming a partial
// download) unless the cached one has the published checksum, checked, and imported.
image::ImageRecord acquire_tarball(const CatalogEntry& e, const AcquireOptions& o,
                                   const std::string& arch, const std::string& base_name,
                                   image::ContentStore& content, image::ImageStore& images,
                                   const std::function<void(const std::string&)>& status) {
  std::string url = with_arch(e.tarball_url, arch);
  std::string sums_url = with_arch(e.tarball_sums, arch);
  FetchOptions f;
  f.cache_dir = o.download_cache.empty() ? default_download_cache() : o.download_cache;
  f.on_status = status;
  f.noun = "download";
  PackageArg tarball = parse_package_arg(url);
  PackageArg sums = parse_package_arg(sums_url);
  FetchOptions fs = f;
  fs.refresh = true;  // checksums of the current release
  std::string sums_text = read_file(fetch_package(sums, fs).path);
  std::string want = sha256sums_entry(sums_text, tarball.file_name);
  if (want.empty()) throw Error(sums_url + " has no checksum for " + tarball.file_name, ENOENT);
  std::string cached = cache_path_for(f.cache_dir, tarball);
  if (path_exists(cached) && image::digest_hex(image::sha256_of_file(cached)) != want) {
    status("cached " + tarball.file_name + " is not the published one, downloading it again");
    ::unlink(cached.c_str());
  }
  auto got = fetch_package(tarball, f);
  if (!got.from_cache) {
    std::string have = image::digest_hex(image::sha256_of_file(got.path));
    if (have != want) {
      ::unlink(got.path.c_str());
      throw Error(url + ": checksum mismatch: SHA256SUMS says " + want + ", the download is " +
                      have + " (removed; try again)",
                  EIO);
    }
  }
  status("importing " + tarball.file_name);
  return image::import_rootfs_tarball(
      content, images, got.path,
      {base_name, "postroj tarball " + url, image::platform_of_debian_arch(arch)}, status);
}

}  // namespace

image::ImageRecord acquire_image(const CatalogEntry& e, const AcquireOptions& o) {
  auto status = [&](const std::string& s) {
    if (o.on_status) o.on_status(e.label + ": " + s);
  };
  try {
    image::ContentStore content(o.store_root);
    image::ImageStore images(o.store_root);
    std::string host_arch = image::debian_arch_of(image::host_platform());
    std::string arch = o.arch.empty() || o.arch == host_arch ? "" : o.arch;
    image::Platform platform = image::platform_of_debian_arch(arch.empty() ? host_arch : arch);
    if (!o.force)
      if (auto rec = images.find(image_name_for(e.label, arch))) return *rec;
    if (!arch.empty()) engine::ensure_runnable_arch(platform.architecture);
    std::string base_name = image::parse_reference(base_image_name_for(e.label, arch)).str();
    image::ImageRecord base;
    if (e.from_tarball()) {
      if (!arch.empty() && e.tarball_url.find("{arch}") == std::string::npos)
        throw Error("its tarball is for one architecture only, not " + arch, ENOTSUP);
      base = acquire_tarball(e, o, arch.empty() ? host_arch : arch, base_name, content, images,
                             status);
    } else if (e.baked()) {
      image::BakeOptions b;
      b.distro = e.bake_distro;
      b.suite = e.bake_suite;
      b.include = bake_packages(e);
      b.name = base_name;
      b.cache_dir = o.bake_cache;
      b.mirror = e.bake_mirror;
      b.arch = arch;
      b.quiet = true;
      b.on_status = status;
      status("baking " + e.source_text() + " with " + b.include[0] + " (mmdebstrap)");
      base = image::bake_image(content, images, b).record;
    } else {
      status("pulling " + e.image_ref);
      image::PullOptions p;
      p.registries_conf = o.registries_conf;
      if (!arch.empty()) p.platform = platform.str();
      base = image::pull_image(content, images, e.image_ref, p);
      images.put(base, base_name);
    }
    engine::ProvisionOptions po;
    po.store_root = o.store_root;
    po.state_root = o.state_root;
    po.force = o.force;  // fresh package lists, too
    po.extra_commands = probe_image_commands(e);
    po.on_status = status;
    auto ready = engine::ensure_systemd(base, po);
    images.put(ready, image::parse_reference(image_name_for(e.label, arch)).str());
    status("ready as " + image_name_for(e.label, arch));
    return ready;
  } catch (const Error& err) {
    throw err.with_context(e.label);
  }
}

}  // namespace racker::probe
