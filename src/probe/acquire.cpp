#include "probe/acquire.hpp"

#include "base/error.hpp"
#include "engine/provision.hpp"
#include "image/bake.hpp"
#include "image/content_store.hpp"
#include "image/puller.hpp"
#include "image/reference.hpp"

namespace racker::probe {

std::vector<std::string> bake_packages(const CatalogEntry& e) {
  (void)e;  // debian and ubuntu alike
  return {"systemd", "systemd-sysv", "dbus"};
}

std::vector<std::string> probe_image_commands(const CatalogEntry& e) {
  std::vector<std::string> c;
  // package lists, so that packages under test get their dependencies without a refresh
  const std::string& pm = e.package_manager;
  if (pm == "apt") c.push_back("apt-get update -q");
  if (pm == "dnf" || pm == "yum" || pm == "microdnf") c.push_back(pm + " makecache");
  if (pm == "zypper") c.push_back("zypper --non-interactive refresh");
  if (pm == "pacman") c.push_back("pacman -Sy --noconfirm");
  // a journal in memory: no flush to /var/log at every boot of a throwaway container
  c.push_back(
      "mkdir -p /etc/systemd/journald.conf.d && "
      "printf '[Journal]\\nStorage=volatile\\n' > /etc/systemd/journald.conf.d/postroj.conf");
  return c;
}

std::optional<image::ImageRecord> find_ready_image(const std::string& store_root,
                                                   const CatalogEntry& e) {
  image::ImageStore images(store_root);
  return images.find(image_name_for(e.label));
}

image::ImageRecord acquire_image(const CatalogEntry& e, const AcquireOptions& o) {
  auto status = [&](const std::string& s) {
    if (o.on_status) o.on_status(e.label + ": " + s);
  };
  try {
    image::ContentStore content(o.store_root);
    image::ImageStore images(o.store_root);
    if (!o.force)
      if (auto rec = images.find(image_name_for(e.label))) return *rec;
    std::string base_name = image::parse_reference(base_image_name_for(e.label)).str();
    image::ImageRecord base;
    if (e.baked()) {
      image::BakeOptions b;
      b.distro = e.bake_distro;
      b.suite = e.bake_suite;
      b.include = bake_packages(e);
      b.name = base_name;
      b.cache_dir = o.bake_cache;
      b.mirror = e.bake_mirror;
      b.quiet = true;
      b.on_status = status;
      status("baking " + e.source_text() + " with " + b.include[0] + " (mmdebstrap)");
      base = image::bake_image(content, images, b).record;
    } else {
      status("pulling " + e.image_ref);
      image::PullOptions p;
      p.registries_conf = o.registries_conf;
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
    images.put(ready, image::parse_reference(image_name_for(e.label)).str());
    status("ready as " + image_name_for(e.label));
    return ready;
  } catch (const Error& err) {
    throw err.with_context(e.label);
  }
}

}  // namespace racker::probe
