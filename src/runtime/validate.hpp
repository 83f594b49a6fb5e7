#pragma once

#include <string>

#include "oci/spec.hpp"

namespace racker::runtime {

// Checks a parsed spec against what this runtime can do, before anything is created: every
// problem is one line "config.json: FIELD: problem". Returns the absolute rootfs path.
std::string validate_spec(const oci::Spec& spec, const std::string& bundle);

}  // namespace racker::runtime
