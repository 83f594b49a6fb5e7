// Capabilities of the container process. Runs in the init/exec child: no exceptions,
// returns -errno with *what naming the failed step.
#pragma once

#include "oci/spec.hpp"

namespace racker::runtime {

// Drops every capability not in caps.bounding from the bounding set (needs CAP_SETPCAP).
int drop_bounding(const oci::Capabilities& caps, const char** what);
// Sets effective/permitted/inheritable, then raises the ambient set. Call after setuid
// with PR_SET_KEEPCAPS.
int apply_capabilities(const oci::Capabilities& caps, const char** what);

}  // namespace racker::runtime
