#include "engine/net_leases.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <cerrno>
#include <memory>
#include <random>

#include "base/error.hpp"
#include "base/fd.hpp"
#include "base/fs.hpp"
#include "base/strings.hpp"

namespace racker::engine::net {
namespace {

std::string attach_path(const std::string& root, const std::string& id) {
  return root + "/attach/" + id;
}

std::string lease_path(const std::string& root, const std::string& address) {
  return root + "/leases/" + address;
}

// The names in dir but "." and "..", and write_file_atomic's temporaries; none when dir is
// missing.
std::vector<std::string> entries(const std::string& dir) {
  std::vector<std::string> out;
  for (auto& name : dir_names(dir))
    if (name.find(".tmp") == std::string::npos) out.push_back(std::move(name));
  return out;
}

}  // namespace

NetLock::NetLock(const std::string& root) : lock_(root + "/lock") {}

std::string netns_path(const std::string& root, const std::string& id) {
  return root + "/netns/" + id;
}

bool netns_mounted(const std::string& root, const std::string& id) {
  struct statfs s {};
  return ::statfs(netns_path(root, id).c_str(), &s) == 0 &&
         static_cast<unsigned long>(s.f_type) == NSFS_MAGIC;
}

uint32_t take_lease(const NetLock&, const std::string& root, const Ipv4Net& gateway,
                    const std::string& id) {
  mkdir_p(root + "/leases", 0700);
  Ipv4Net subnet{gateway.addr & gateway.mask(), gateway.prefix};
  uint32_t n = host_count(subnet);
  if (n == 0) throw Error("subnet " + format_cidr(subnet) + " has no room", ENOSPC);
  uint32_t start = std::random_device{}() % n;
  for (uint32_t k = 0; k < n; ++k) {
    uint32_t addr = nth_host(subnet, (start + k) % n);
    if (addr == gateway.addr) continue;
    std::string path = lease_path(root, format_ipv4(addr));
    UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
    if (!fd) {
      if (errno == EEXIST) continue;
      throw_errno("create lease " + path);
    }
    if (!write_all(fd.get(), id.data(), id.size())) throw_errno("write lease " + path);
    return addr;
  }
  throw Error("no free address in " + format_cidr(subnet), ENOSPC);
}

void release_lease(const NetLock&, const std::string& root, uint32_t address,
                   const std::string& id) {
  std::string path = lease_path(root, format_ipv4(address));
  if (read_file_if_exists(path) == id) ::unlink(path.c_str());
}

void write_attach(const std::string& root, const std::string& id, const Ipv4Net& address,
                  const std::string& veth) {
  mkdir_p(root + "/attach", 0700);
  write_file_atomic(attach_path(root, id), format_cidr(address) + " " + veth + "\n", 0600);
}

std::optional<AttachRecord> read_attach(const std::string& root, const std::string& id) {
  auto text = read_file_if_exists(attach_path(root, id));
  if (!text) return std::nullopt;
  auto f = split(trim(*text), ' ');
  AttachRecord r;
  if (!f.empty()) r.address = parse_cidr(f[0]);
  if (f.size() == 2) r.veth = f[1];
  return r;
}

void remove_attach(const std::string& root, const std::string& id) {
  ::unlink(attach_path(root, id).c_str());
}

std::vector<std::string> stale_attachments(const NetLock&, const std::string& root) {
  std::vector<std::string> stale;
  for (auto& id : entries(root + "/attach"))
    if (!netns_mounted(root, id)) stale.push_back(id);
  return stale;
}

std::vector<std::string> drop_orphan_leases(const NetLock&, const std::string& root) {
  std::vector<std::string> dropped;
  for (auto& address : entries(root + "/leases")) {
    std::string path = lease_path(root, address);
    auto id = read_file_if_exists(path);
    if (!id) continue;
    bool valid = !id->empty() && *id != "." && *id != ".." && id->find('/') == std::string::npos;
    bool orphan = !valid || (!path_exists(attach_path(root, *id)) && !netns_mounted(root, *id));
    if (orphan && ::unlink(path.c_str()) == 0) dropped.push_back(address);
  }
  return dropped;
}

}  // namespace racker::engine::net
