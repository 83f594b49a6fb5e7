#include "base/clock.hpp"

#include <time.h>

#include <cstdio>

namespace racker {

std::string now_rfc3339() {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  struct tm tm;
  gmtime_r(&ts.tv_sec, &tm);
  char buf[64];
  strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  char ns[16];
  snprintf(ns, sizeof ns, ".%09ldZ", ts.tv_nsec);
  return std::string(buf) + ns;
}

}  // namespace racker
