#include "cli/args.hpp"

#include <cerrno>

#include "base/error.hpp"

namespace racker::cli {

std::string ParsedArgs::get(const std::string& name, const std::string& def) const {
  auto it = values.find(name);
  if (it == values.end() || it->second.empty()) return def;
  return it->second.back();
}

std::vector<std::string> ParsedArgs::all(const std::string& name) const {
  auto it = values.find(name);
  return it == values.end() ? std::vector<std::string>{} : it->second;
}

bool ParsedArgs::flag(const std::string& name) const {
  auto it = values.find(name);
  if (it == values.end()) return false;
  const std::string& v = it->second.back();
  return v != "false" && v != "0";
}

ParsedArgs parse_args(const std::vector<std::string>& args, const std::vector<OptionSpec>& specs,
                      bool stop_at_positional) {
  ParsedArgs out;
  size_t i = 0;
  for (; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--") {
      ++i;
      break;
    }
    if (a.size() < 2 || a[0] != '-') {
      if (stop_at_positional) break;
      out.positional.push_back(a);
      continue;
    }
    std::string body = a.substr(a[1] == '-' ? 2 : 1);
    if (a[1] != '-' && body.size() > 1 && body.find('=') == std::string::npos) {
      // docker-style combined short flags: "-it" = "-i -t" (when no option is named "it")
      bool named = false, all_short = true;
      for (auto& s : specs) named |= s.name == body;
      for (size_t k = 0; k < body.size(); ++k) {
        const OptionSpec* hit = nullptr;
        for (auto& s : specs)
          if (s.short_name == body[k]) hit = &s;
        all_short &= hit && (!hit->takes_value || k + 1 == body.size());
      }
      if (!named && all_short) {
        for (size_t k = 0; k + 1 < body.size(); ++k)
          for (auto& s : specs)
            if (s.short_name == body[k]) out.values[s.name].push_back("true");
        body = body.substr(body.size() - 1);
      }
    }
    std::string value;
    bool has_value = false;
    if (auto eq = body.find('='); eq != std::string::npos) {
      value = body.substr(eq + 1);
      body = body.substr(0, eq);
      has_value = true;
    }
    const OptionSpec* spec = nullptr;
    for (auto& s : specs) {
      if (s.name == body || (body.size() == 1 && s.short_name == body[0])) spec = &s;
    }
    if (!spec)
      throw Error("unknown option " + a.substr(0, a.find('=')), EINVAL, ErrorKind::invalid);
    if (spec->takes_value) {
      if (!has_value) {
        if (i + 1 >= args.size())
          throw Error("option --" + spec->name + " needs a value", EINVAL, ErrorKind::invalid);
        value = args[++i];
      }
    } else if (!has_value) {
      value = "true";
    }
    out.values[spec->name].push_back(value);
  }
  for (; i < args.size(); ++i) out.positional.push_back(args[i]);
  return out;
}

std::string options_help(const std::vector<OptionSpec>& specs) {
  std::string out;
  for (auto& s : specs) {
    std::string left = "  ";
    if (s.short_name) left += std::string("-") + s.short_name + ", ";
    left += "--" + s.name + (s.takes_value ? " value" : "");
    if (left.size() < 32) left.resize(32, ' ');
    out += left + " " + s.help + "\n";
  }
  return out;
}

}  // namespace racker::cli
