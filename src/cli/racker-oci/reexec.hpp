#pragma once

namespace racker::cli {

// CVE-2019-5736: a container process must never reach the host's racker-oci binary through
// /proc/self/exe (it could overwrite it). Commands that put processes into a container call
// this first: it re-executes the program from a sealed, read-only memfd copy of itself, so the
// only executable a container can see is that copy. Returns if already running from one.
// Throws racker::Error when no sealed copy can be made.
void reexec_from_sealed_copy(char** argv);

}  // namespace racker::cli
