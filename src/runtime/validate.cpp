#include "runtime/validate.hpp"

#include <sys/stat.h>

#include "base/error.hpp"
#include "base/fs.hpp"
#include "runtime/mounts.hpp"

namespace racker::runtime {
namespace {

[[noreturn]] void fail(const std::string& where, const std::string& what) {
  throw Error("config.json: " + where + ": " + what, EINVAL);
}

bool has_ns(const oci::Spec& spec, const std::string& type) {
  return spec.linux_ && spec.linux_->find_namespace(type);
}

void validate_sysctl(const oci::Spec& spec) {
  if (!spec.linux_) return;
  for (auto& [key, value] : spec.linux_->sysctl) {
    std::string where = "linux.sysctl." + key;
    if (key.find("..") != std::string::npos || key.find('/') != std::string::npos)
      fail(where, "invalid sysctl name");
    bool ipc = key.starts_with("kernel.msg") || key.starts_with("kernel.sem") ||
               key.starts_with("kernel.shm") || key.starts_with("fs.mqueue.");
    if (ipc) {
      if (!has_ns(spec, "ipc")) fail(where, "needs an ipc namespace");
      continue;
    }
    if (key.starts_with("net.")) {
      auto* ns = spec.linux_->find_namespace("network");
      if (!ns) fail(where, "needs a network namespace");
      continue;
    }
    if (key == "kernel.hostname" || key == "kernel.domainname") {
      if (!has_ns(spec, "uts")) fail(where, "needs a uts namespace");
      continue;
    }
    fail(where, "not a namespaced sysctl: it would change the host");
  }
}

}  // namespace

std::string validate_spec(const oci::Spec& spec, const std::string& bundle) {
  if (!spec.process) fail("process", "required");
  if (spec.process->args.empty()) fail("process.args", "must not be empty");
  std::string rootfs =
      spec.root.path[0] == '/' ? spec.root.path : clean_path(bundle + "/" + spec.root.path);
  struct stat st;
  if (::stat(rootfs.c_str(), &st) != 0)
    fail("root.path", "rootfs \"" + rootfs + "\" does not exist");
  if (!S_ISDIR(st.st_mode)) fail("root.path", "rootfs \"" + rootfs + "\" is not a directory");
  for (size_t i = 0; i < spec.mounts.size(); ++i) {
    auto& m = spec.mounts[i];
    std::string where = "mounts[" + std::to_string(i) + "]";
    auto o = parse_mount_options(m, where);
    if ((o.bind || m.type == "bind") && m.source.empty())
      fail(where + ".source", "required for a bind mount");
  }
  const oci::Linux* lx = spec.linux_ ? &*spec.linux_ : nullptr;
  bool userns = has_ns(spec, "user");
  if (lx) {
    for (size_t i = 0; i < lx->namespaces.size(); ++i) {
      auto& n = lx->namespaces[i];
      if (n.type == "time" && n.path.empty())
        fail("linux.namespaces[" + std::to_string(i) + "]",
             "creating a time namespace is not supported");
      if (!n.path.empty() && !path_exists(n.path))
        fail("linux.namespaces[" + std::to_string(i) + "].path",
             "namespace \"" + n.path + "\" does not exist");
    }
    auto* u = lx->find_namespace("user");
    if (u && u->path.empty() && (lx->uid_mappings.empty() || lx->gid_mappings.empty()))
      fail("linux.uidMappings", "a new user namespace needs uidMappings and gidMappings");
    if (!userns && (!lx->uid_mappings.empty() || !lx->gid_mappings.empty()))
      fail("linux.uidMappings", "mappings given without a user namespace");
    if (lx->personality && !lx->personality->flags.empty())
      fail("linux.personality.flags", "personality flags are not supported");
    if (!lx->intel_rdt_clos.empty()) fail("linux.intelRdt", "Intel RDT is not supported");
  }
  if (!spec.hostname.empty() && !has_ns(spec, "uts"))
    fail("hostname", "setting the hostname needs a uts namespace");
  if (!spec.domainname.empty() && !has_ns(spec, "uts"))
    fail("domainname", "setting the domainname needs a uts namespace");
  validate_sysctl(spec);
  return rootfs;
}

}  // namespace racker::runtime
