#include "oci/state.hpp"

namespace racker::oci {

nlohmann::json to_json(const State& s) {
  nlohmann::json j = {
      {"ociVersion", s.oci_version}, {"id", s.id}, {"status", s.status}, {"bundle", s.bundle}};
  if (s.status != "stopped") j["pid"] = s.pid;
  if (!s.annotations.empty()) j["annotations"] = s.annotations;
  return j;
}

}  // namespace racker::oci
