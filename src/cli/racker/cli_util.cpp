#include "cli/racker/cli_util.hpp"

#include <sys/stat.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>

#include "base/error.hpp"

namespace racker::cli {

void out(const std::string& s) {
  std::fwrite(s.data(), 1, s.size(), stdout);
  std::fflush(stdout);
}

void share_stdin_pipe() {
  struct stat st {};
  if (::fstat(0, &st) == 0 && S_ISFIFO(st.st_mode) && (st.st_mode & 0066) != 0066)
    (void)::fchmod(0, (st.st_mode & 07777) | 0066);
}

ParsedArgs parse(const std::vector<std::string>& args, std::vector<OptionSpec> specs,
                 const std::string& usage, const std::string& description, size_t min_pos,
                 size_t max_pos) {
  specs.push_back({"help", 'h', false, false, "show help"});
  ParsedArgs a = parse_args(args, specs, false);
  if (a.flag("help")) {
    out("usage: racker " + usage + "\n\n" + description + "options:\n" + options_help(specs));
    std::exit(0);
  }
  if (a.positional.size() < min_pos || a.positional.size() > max_pos)
    throw Error("usage: racker " + usage, EINVAL);
  return a;
}

}  // namespace racker::cli
