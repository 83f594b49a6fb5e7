// User namespace ranges for containers (--userns=auto): 65536 host ids each, from the
// subordinate ids of the user "containers" in /etc/subuid and /etc/subgid (as podman's
// --userns=auto takes them), added there when absent. Ranges are leased without overlap:
// <root>/<uid base> files (root: ids_root(state_root)) hold the container directory that
// owns the range; a lease whose directory is gone is free again (a container removed by a
// racker that died halfway).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace racker::engine {

inline constexpr uint32_t kRangeSize = 65536;
inline constexpr const char* kSubidUser = "containers";

struct SubidRange {
  uint32_t start = 0;
  uint64_t count = 0;
};

struct IdRange {
  uint32_t uid = 0;  // host uid of container uid 0
  uint32_t gid = 0;  // host gid of container gid 0
  uint32_t size = kRangeSize;
};

// The ranges of user in a subuid/subgid file's text ("name:start:count" lines).
std::vector<SubidRange> subid_ranges(const std::string& text, const std::string& user);
// A range of count ids for user that overlaps no line of text (anyone's): 2^31 upwards (as
// podman's documentation suggests), else after the highest range in use.
SubidRange free_subid_range(const std::string& text, uint64_t count);

// The directory that holds the leases for a runtime state root (<state_root>-userns).
std::string ids_root(const std::string& state_root);

// Leases a free range for the container whose directory is owner_dir (it must exist).
// etc: where subuid and subgid are (tests). Throws racker::Error (ENOSPC when all are taken).
IdRange lease_range(const std::string& state_root, const std::string& owner_dir,
                    const std::string& etc = "/etc");
// Gives a range back if owner_dir still holds it. Never throws.
void release_range(const std::string& state_root, const IdRange& range,
                   const std::string& owner_dir) noexcept;

// Shifts the owner of every file below dir (and dir) by range: uid u becomes range.uid + u
// (the chown-ed copy where the kernel cannot id-map a mount); to_root: every file becomes
// the range's root's instead. Throws racker::Error.
void shift_owners(const std::string& dir, const IdRange& range, bool to_root = false);

}  // namespace racker::engine
