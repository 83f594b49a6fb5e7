#include "base/log.hpp"

#include <cerrno>

#include <fcntl.h>
#include <time.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "base/fd.hpp"

namespace racker::log {
namespace {
int g_fd = 2;
Format g_format = Format::text;
bool g_debug = false;

const char* level_name(Level l) {
  switch (l) {
    case Level::debug:
      return "debug";
    case Level::info:
      return "info";
    case Level::warn:
      return "warning";
    case Level::error:
      return "error";
  }
  return "info";
}
}  // namespace

void configure(const std::string& path, Format format, bool debug) {
  g_format = format;
  g_debug = debug;
  if (!path.empty()) {
    int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd >= 0) g_fd = fd;
  }
}

bool to_file() {
  return g_fd != 2;
}

void write(Level level, const std::string& msg) {
  if (level == Level::debug && !g_debug) return;
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  struct tm tm;
  gmtime_r(&ts.tv_sec, &tm);
  char when[64];
  strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);
  std::string line;
  std::string time = std::string(when) + "." + std::to_string(ts.tv_nsec / 1000000) + "Z";
  if (g_format == Format::json) {
    nlohmann::json j = {{"level", level_name(level)}, {"msg", msg}, {"time", time}};
    line = j.dump() + "\n";
  } else if (g_fd == 2) {
    line = std::string(program_invocation_short_name) + ": " + msg + "\n";  // racker, racker-oci
  } else {
    line = time + " " + level_name(level) + ": " + msg + "\n";
  }
  write_all(g_fd, line.data(), line.size());
}

}  // namespace racker::log
