// A small command-line parser with runc's conventions: "--flag value", "--flag=value",
// Go-style "-flag value", short aliases ("-d"), and options only before the first positional.
#pragma once

#include <map>
#include <string>
#include <vector>

namespace racker::cli {

struct OptionSpec {
  std::string name;     // long name without dashes
  char short_name = 0;  // 0 = none
  bool takes_value = false;
  bool repeatable = false;
  std::string help;
};

struct ParsedArgs {
  std::map<std::string, std::vector<std::string>> values;
  std::vector<std::string> positional;

  bool has(const std::string& name) const { return values.count(name) > 0; }
  std::string get(const std::string& name, const std::string& def = "") const;
  std::vector<std::string> all(const std::string& name) const;
  bool flag(const std::string& name) const;
};

// Parses args; options stop at the first positional (or "--") when stop_at_positional.
// Throws racker::Error "unknown option --x" / "option --x needs a value".
ParsedArgs parse_args(const std::vector<std::string>& args, const std::vector<OptionSpec>& specs,
                      bool stop_at_positional = true);

std::string options_help(const std::vector<OptionSpec>& specs);

}  // namespace racker::cli
