#pragma once

#include <string>

namespace racker {

// Current UTC time as RFC 3339 with nanoseconds, e.g. "2026-11-22T21:41:01.123456789Z".
std::string now_rfc3339();

}  // namespace racker
