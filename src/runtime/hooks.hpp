// OCI hooks: run with the container state on stdin, in the runtime's namespaces (or the
// container's, when the container init calls them), with an optional timeout.
#pragma once

#include <string>
#include <vector>

#include "oci/spec.hpp"

namespace racker::runtime {

// Runs one hook and waits for it. Throws racker::Error naming the hook on a non-zero exit,
// a signal or a timeout.
void run_hook(const oci::Hook& hook, const std::string& state_json);
// Runs hooks in order; stops at the first failure (throws) unless warn_only, in which case
// failures are logged as warnings and the rest still run.
void run_hooks(const std::vector<oci::Hook>& hooks, const std::string& kind,
               const std::string& state_json, bool warn_only = false);

}  // namespace racker::runtime
