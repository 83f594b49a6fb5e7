// Address leases on the racker bridge and the records of what a container holds, under a
// network state root (net_root() of engine/network.hpp, e.g. /run/racker-net):
//   leases/<a.b.c.d>  one file per address in use, holding the container id
//   attach/<id>       "<address>/<prefix> <host veth>": what teardown releases
//   netns/<id>        the container's namespace, bind mounted (engine/network.cpp): a lease
//                     whose id has it mounted is live
//   lock              NetLock
// The root is a parameter throughout, so that the lease logic runs on any directory.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "base/file_lock.hpp"
#include "engine/ipv4.hpp"

namespace racker::engine::net {

// <root>/lock, held while a lease is taken or released, while stale ones are swept and while
// the bridge is set up. Functions that take a NetLock expect it held on the same root.
class NetLock {
 public:
  explicit NetLock(const std::string& root);

 private:
  FileLock lock_;
};

// <root>/netns/<id>, and whether a network namespace is mounted there.
std::string netns_path(const std::string& root, const std::string& id);
bool netns_mounted(const std::string& root, const std::string& id);

// Takes a free address of the subnet of gateway (the bridge's address, never handed out) for
// id: leases/<address> created O_EXCL and holding id, from a random starting point (a
// just-released address is rarely handed out again at once, so stale neighbour entries do not
// matter). Throws Error (ENOSPC) when the subnet is full.
uint32_t take_lease(const NetLock& held, const std::string& root, const Ipv4Net& gateway,
                    const std::string& id);
// Removes leases/<address> if it still holds id: a lease released twice may meanwhile belong
// to someone else.
void release_lease(const NetLock& held, const std::string& root, uint32_t address,
                   const std::string& id);

struct AttachRecord {
  std::optional<Ipv4Net> address;  // eth0's address and prefix; nullopt when unreadable
  std::string veth;                // the host end; empty when the record does not say
};
void write_attach(const std::string& root, const std::string& id, const Ipv4Net& address,
                  const std::string& veth);
std::optional<AttachRecord> read_attach(const std::string& root, const std::string& id);
void remove_attach(const std::string& root, const std::string& id);

// Ids with an attach record but no namespace mounted (a reboot with a persistent /run, a
// namespace unmounted by hand, a crash halfway through teardown): for teardown. The namespace
// is mounted before the record is written and unmounted before it is removed.
std::vector<std::string> stale_attachments(const NetLock& held, const std::string& root);
// Removes the leases no container can release: empty ones (or not holding an id) and those whose id
// has neither an attach record nor a namespace mounted (left by a racker killed between taking the
// lease and writing the record; teardown finds nothing to release them by). A lease is taken, and
// its record written, under the lock with the namespace already mounted, so under the lock no live
// lease looks orphaned. Returns the addresses removed.
std::vector<std::string> drop_orphan_leases(const NetLock& held, const std::string& root);

}  // namespace racker::engine::net
