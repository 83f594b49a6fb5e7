#include "base/timing.hpp"

#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <vector>

namespace racker::timing {

namespace {

using Clock = std::chrono::steady_clock;  // CLOCK_MONOTONIC

const Clock::time_point kStart = Clock::now();  // static initialisation: about process start

struct Mark {
  std::string name;
  Clock::time_point at;
};

std::mutex mu;
std::vector<Mark> marks;
Clock::time_point last = kStart;

double ms(Clock::duration d) {
  return std::chrono::duration<double, std::milli>(d).count();
}

}  // namespace

bool enabled() {
  static const bool on = [] {
    const char* v = std::getenv("RACKER_TIMINGS");
    return v && *v && std::strcmp(v, "0") != 0;
  }();
  return on;
}

void mark(std::string_view name) {
  if (!enabled()) return;
  auto now = Clock::now();
  std::lock_guard lock(mu);
  marks.push_back({std::string(name), now});
}

void report() {
  if (!enabled()) return;
  auto now = Clock::now();
  std::lock_guard lock(mu);
  if (marks.empty()) return;
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.1f", ms(kStart.time_since_epoch()));
  std::string line = "racker-timing: t0_mono_ms=" + std::string(buf);
  for (const auto& m : marks) {
    std::snprintf(buf, sizeof buf, "%.1f", ms(m.at - last));
    line += " " + m.name + "_ms=" + buf;
    last = m.at;
  }
  std::snprintf(buf, sizeof buf, "%.1f", ms(now - kStart));
  line += " total_ms=" + std::string(buf) + "\n";
  marks.clear();
  // one write(2): stays whole next to other output on the same stderr
  size_t off = 0;
  while (off < line.size()) {
    ssize_t n = ::write(STDERR_FILENO, line.data() + off, line.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    off += static_cast<size_t>(n);
  }
}

}  // namespace racker::timing
