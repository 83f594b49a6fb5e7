#pragma once

#include <map>
#include <string>

#include <nlohmann/json.hpp>

namespace racker::oci {

// The state object of the runtime spec, as printed by `state` and fed to hooks on stdin.
struct State {
  std::string oci_version = "1.2.0";
  std::string id;
  std::string status;  // creating, created, running, stopped
  int pid = 0;
  std::string bundle;
  std::map<std::string, std::string> annotations;
};

nlohmann::json to_json(const State& s);

}  // namespace racker::oci
