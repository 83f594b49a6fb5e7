#pragma once

#include <string>

namespace racker::log {

enum class Level { debug, info, warn, error };
enum class Format { text, json };

// Configures where log lines go: a file path (appended) or stderr when empty.
void configure(const std::string& path, Format format, bool debug);
void write(Level level, const std::string& msg);
inline void debug(const std::string& m) {
  write(Level::debug, m);
}
inline void info(const std::string& m) {
  write(Level::info, m);
}
inline void warn(const std::string& m) {
  write(Level::warn, m);
}
inline void error(const std::string& m) {
  write(Level::error, m);
}
// True when a --log file was given (errors then go to both the file and stderr).
bool to_file();

}  // namespace racker::log
