#include "probe/matrix.hpp"

#include <cerrno>
#include <set>

#include <nlohmann/json.hpp>

#include "base/error.hpp"
#include "base/strings.hpp"

namespace racker::probe {
namespace {

std::vector<std::string> strings_of(const nlohmann::json& j, const char* key,
                                    const std::string& at) {
  std::vector<std::string> out;
  auto it = j.find(key);
  if (it == j.end()) return out;
  if (!it->is_array()) throw Error(at + ": \"" + key + "\" must be an array of strings", EINVAL);
  for (auto& x : *it) {
    if (!x.is_string() || x.get<std::string>().empty())
      throw Error(at + ": \"" + key + "\" must be an array of strings", EINVAL);
    out.push_back(x.get<std::string>());
  }
  return out;
}

int seconds_of(const nlohmann::json& j, const char* key, int def, const std::string& at) {
  auto it = j.find(key);
  if (it == j.end()) return def;
  if (!it->is_number_integer() || it->get<long>() <= 0 || it->get<long>() > 86400)
    throw Error(at + ": \"" + key + "\" must be a number of seconds (1-86400)", EINVAL);
  return static_cast<int>(it->get<long>());
}

}  // namespace

Matrix parse_matrix(const std::string& text, const std::string& origin,
                    const std::string& base_dir) {
  nlohmann::json doc;
  try {
    doc = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    throw Error(origin + ": invalid JSON: " + e.what(), EINVAL);
  }
  if (!doc.is_object()) throw Error(origin + ": expected an object", EINVAL);
  Matrix m;
  m.images = strings_of(doc, "images", origin);
  if (m.images.empty()) throw Error(origin + ": \"images\" must name at least one label", EINVAL);
  auto probes = doc.find("probes");
  if (probes == doc.end() || !probes->is_array() || probes->empty())
    throw Error(origin + ": \"probes\" must be a non-empty array", EINVAL);
  std::set<std::string> names;
  for (size_t i = 0; i < probes->size(); ++i) {
    const auto& j = (*probes)[i];
    std::string at = origin + ": probes[" + std::to_string(i) + "]";
    if (!j.is_object()) throw Error(at + ": must be an object", EINVAL);
    MatrixProbe p;
    if (!j.contains("name") || !j["name"].is_string() || j["name"].get<std::string>().empty())
      throw Error(at + ": missing \"name\"", EINVAL);
    p.name = j["name"].get<std::string>();
    if (!names.insert(p.name).second)
      throw Error(at + ": duplicate probe name \"" + p.name + "\"", EINVAL);
    for (auto& pkg : strings_of(j, "packages", at))
      p.packages.push_back(
          pkg.find("://") != std::string::npos || pkg[0] == '/' ? pkg : base_dir + "/" + pkg);
    p.units = strings_of(j, "units", at);
    p.network = strings_of(j, "network", at);
    if (j.contains("http_status")) {
      if (!j["http_status"].is_string())
        throw Error(at + ": \"http_status\" must be a string", EINVAL);
      p.http_status = j["http_status"].get<std::string>();
    }
    p.timeout_s = seconds_of(j, "timeout", 60, at);
    p.network_timeout_s = seconds_of(j, "network_timeout", 30, at);
    for (auto& [key, _] : j.items())
      if (key != "name" && key != "packages" && key != "units" && key != "network" &&
          key != "http_status" && key != "timeout" && key != "network_timeout")
        throw Error(at + ": unknown key \"" + key + "\"", EINVAL);
    m.probes.push_back(std::move(p));
  }
  for (auto& [key, _] : doc.items())
    if (key != "images" && key != "probes" && key != "comment")
      throw Error(origin + ": unknown key \"" + key + "\"", EINVAL);
  return m;
}

std::pair<int, int> parse_shard(const std::string& text) {
  auto slash = text.find('/');
  auto i = parse_uint(slash == std::string::npos ? "" : text.substr(0, slash));
  auto n = parse_uint(slash == std::string::npos ? "" : text.substr(slash + 1));
  if (!i || !n || *i < 1 || *n < 1 || *i > *n || *n > 100000)
    throw Error("invalid --shard \"" + text + "\": use I/N with 1 <= I <= N", EINVAL,
                ErrorKind::invalid);
  return {static_cast<int>(*i), static_cast<int>(*n)};
}

std::vector<MatrixCell> matrix_cells(const Matrix& m, int shard_i, int shard_n) {
  std::vector<MatrixCell> out;
  size_t index = 0;
  for (auto& image : m.images)
    for (auto& p : m.probes) {
      if (shard_n <= 1 || static_cast<int>(index % static_cast<size_t>(shard_n)) == shard_i - 1)
        out.push_back({index, image, p});
      ++index;
    }
  return out;
}

}  // namespace racker::probe
