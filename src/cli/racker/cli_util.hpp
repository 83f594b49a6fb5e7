// Small helpers shared by racker's command files.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "cli/args.hpp"

namespace racker::cli {

// Writes s to stdout and flushes (output may be piped into another program).
void out(const std::string& s);

// -i without a terminal: when stdin is a pipe, lets a payload in a user namespace reopen it
// (cat /dev/stdin opens /proc/self/fd/0, and the pipe's owner, host root, is nobody in there;
// a pipe is 0600). Only holders of the pipe and ptrace-capable processes can reach it anyway.
void share_stdin_pipe();

// Parses a command's arguments (options anywhere, "--help" prints usage and exits 0) and
// checks the number of positional arguments; throws racker::Error "usage: racker USAGE".
// `description` (may be empty) is printed between the usage line and the options.
ParsedArgs parse(const std::vector<std::string>& args, std::vector<OptionSpec> specs,
                 const std::string& usage, const std::string& description, size_t min_pos,
                 size_t max_pos);
inline ParsedArgs parse(const std::vector<std::string>& args, std::vector<OptionSpec> specs,
                        const std::string& usage, size_t min_pos, size_t max_pos) {
  return parse(args, std::move(specs), usage, "", min_pos, max_pos);
}

}  // namespace racker::cli
