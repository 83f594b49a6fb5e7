// Phase timings for benchmarks, off unless $RACKER_TIMINGS is set (to anything but "" or "0").
//
//   timing::mark("ready");   // the phase that ends now is called "ready"
//   timing::report();        // stderr: "racker-timing: t0_mono_ms=... setup_ms=... ready_ms=..."
//
// Each NAME_ms is the time from the previous mark (the first: from process start, i.e. static
// initialisation, after the dynamic loader) to this one; total_ms runs from process start to the
// report. t0_mono_ms is process start on CLOCK_MONOTONIC (the clock of Python's
// time.monotonic()), so a harness can add the exec + dynamic loader time it saw before it.
// One line, space-separated key=value pairs, milliseconds with one decimal.
#pragma once

#include <string_view>

namespace racker::timing {

bool enabled();
// Records the end of phase `name` ([a-z0-9_], no spaces). A no-op when disabled.
void mark(std::string_view name);
// Writes the line (once; later marks start a new one) to stderr when enabled and marked.
void report();

}  // namespace racker::timing
