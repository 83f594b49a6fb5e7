// Capabilities of the container process. Runs in the init/exec child: no exceptions,
// returns -errno with *what naming the failed step.
#pragma once

#include <cstdint>

#include "oci/spec.hpp"

namespace racker::runtime {

// Drops every capability not in caps.bounding from the bounding set (needs CAP_SETPCAP).
int drop_bounding(const oci::Capabilities& caps, const char** what);
// Sets effective/permitted/inheritable, then raises the ambient set. Call after setuid
// with PR_SET_KEEPCAPS.
int apply_capabilities(const oci::Capabilities& caps, const char** what);

// The bounding set of this process (CapBnd in /proc/self/status), one bit per capability
// number; all bits when it cannot be read. (Not for the init/exec child: it allocates.)
uint64_t own_bounding_set();

}  // namespace racker::runtime
