#include "runtime/caps.hpp"

#include <linux/capability.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdlib>

#include "base/fs.hpp"
#include "base/strings.hpp"

namespace racker::runtime {
namespace {

int last_cap() {
  static int cached = -1;
  if (cached >= 0) return cached;
  cached = 40;
  // probe the kernel: the first cap PR_CAPBSET_READ rejects is past the end
  for (int c = 0; c < 64; ++c) {
    if (::prctl(PR_CAPBSET_READ, c, 0, 0, 0) < 0) {
      cached = c - 1;
      break;
    }
  }
  return cached;
}

bool contains(const std::optional<std::vector<int>>& set, int cap) {
  if (!set) return false;
  for (int c : *set)
    if (c == cap) return true;
  return false;
}

}  // namespace

int drop_bounding(const oci::Capabilities& caps, const char** what) {
  if (!caps.bounding) return 0;
  int last = last_cap();
  for (int c = 0; c <= last; ++c) {
    if (contains(caps.bounding, c)) continue;
    if (::prctl(PR_CAPBSET_DROP, c, 0, 0, 0) != 0 && errno != EINVAL) {
      *what = "drop capability from bounding set";
      return -errno;
    }
  }
  return 0;
}

int apply_capabilities(const oci::Capabilities& caps, const char** what) {
  struct __user_cap_header_struct hdr = {_LINUX_CAPABILITY_VERSION_3, 0};
  struct __user_cap_data_struct data[2] = {};
  auto fill = [&](const std::optional<std::vector<int>>& set, auto member) {
    if (!set) return;
    for (int c : *set) {
      if (c < 0 || c > 63) continue;
      data[c / 32].*member |= 1u << (c % 32);
    }
  };
  fill(caps.effective, &__user_cap_data_struct::effective);
  fill(caps.permitted, &__user_cap_data_struct::permitted);
  fill(caps.inheritable, &__user_cap_data_struct::inheritable);
  if (::syscall(SYS_capset, &hdr, data) != 0) {
    *what = "capset";
    return -errno;
  }
  if (caps.ambient) {
    ::prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
    for (int c : *caps.ambient) {
      // like runc: an ambient cap missing from permitted/inheritable is skipped, not fatal
      if (::prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, c, 0, 0) != 0 && errno != EPERM) {
        *what = "raise ambient capability";
        return -errno;
      }
    }
  }
  return 0;
}

uint64_t own_bounding_set() {
  for (auto& line : split(read_file_if_exists("/proc/self/status").value_or(""), '\n'))
    if (line.starts_with("CapBnd:"))
      return std::strtoull(trim(line.substr(7)).c_str(), nullptr, 16);
  return ~0ULL;
}

}  // namespace racker::runtime
