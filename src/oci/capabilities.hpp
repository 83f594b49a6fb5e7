#pragma once

#include <optional>
#include <string>

namespace racker::oci {

// "CAP_SYS_ADMIN" -> 21. nullopt for names the kernel does not know.
std::optional<int> capability_from_name(const std::string& name);
std::string capability_name(int cap);
// The highest capability number this table knows.
int last_known_capability();

}  // namespace racker::oci
