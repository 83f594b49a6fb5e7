#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>

namespace racker {

// The host uid that uid 0 of our user namespace maps to (/proc/self/uid_map); nullopt when 0
// is not mapped or the map cannot be read.
std::optional<uint32_t> host_uid_of_root();

// True for the host's root: euid 0 in the host's user namespace (0 maps to 0). An ordinary
// user, and a rootless racker that is root of its own namespace, are not. Cached once euid is 0.
bool host_root();

// The name of uid in /etc/passwd (what `ps` and runc's OWNER show), else the number.
std::string user_name(uid_t uid);

// The first executable NAME in $PATH (/usr/bin:/bin when unset); "" when there is none.
std::string find_in_path(const std::string& name);

}  // namespace racker
