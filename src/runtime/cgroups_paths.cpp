// Where a container's cgroup lives: the cgroup mounts in /proc/self/mountinfo, the caller's
// own cgroup in /proc/self/cgroup, linux.cgroupsPath (including systemd's slice:prefix:name
// form) resolved to a directory in every hierarchy, and that directory as saved in the
// container's state. Pure logic: the caller reads the /proc files; nothing here touches the host.
#include "runtime/cgroups_internal.hpp"

#include <algorithm>

#include "base/error.hpp"
#include "base/fs.hpp"
#include "base/strings.hpp"

namespace racker::runtime::cgroups_internal {

namespace {

// Controllers the kernel can mount as v1 hierarchies; other super options (noprefix,
// clone_children, release_agent=...) are not controllers.
bool is_v1_controller(std::string_view opt) {
  static const char* const kKnown[] = {"cpu",        "cpuacct", "cpuset",   "memory", "devices",
                                       "freezer",    "net_cls", "net_prio", "blkio",  "hugetlb",
                                       "perf_event", "pids",    "rdma",     "misc",   "debug"};
  for (const char* k : kKnown)
    if (opt == k) return true;
  return starts_with(opt, "name=");
}

// mountinfo escapes space, tab, newline and backslash as \ooo.
std::string unescape_mount_field(std::string_view s) {
  auto oct = [](char c) { return c >= '0' && c <= '7'; };
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 3 < s.size() && oct(s[i + 1]) && oct(s[i + 2]) && oct(s[i + 3])) {
      out += static_cast<char>((s[i + 1] - '0') * 64 + (s[i + 2] - '0') * 8 + (s[i + 3] - '0'));
      i += 3;
      continue;
    }
    out += s[i];
  }
  return out;
}

bool path_is_under(std::string_view path, std::string_view root) {
  if (root == "/") return !path.empty() && path[0] == '/';
  return path == root ||
         (starts_with(path, root) && path.size() > root.size() && path[root.size()] == '/');
}

std::string join_paths(const std::string& root, const std::string& rel) {
  return join_under(root, rel);
}

std::string parent_dir(const std::string& p) {
  auto pos = p.find_last_of('/');
  if (pos == std::string::npos || pos == 0) return "/";
  return p.substr(0, pos);
}

// The caller's cgroup as seen from a mount whose root is `root` (a bind-mounted subtree).
std::string relative_to_mount_root(const std::string& own, const std::string& root) {
  if (root == "/" || root.empty()) return own;
  if (path_is_under(own, root))
    return own.substr(root.size()).empty() ? "/" : own.substr(root.size());
  return own;  // e.g. inside a cgroup namespace: already relative to what is mounted
}

}  // namespace

bool CgroupDir::has(std::string_view controller) const {
  return std::find(controllers.begin(), controllers.end(), controller) != controllers.end();
}

std::vector<CgroupMount> parse_cgroup_mounts(std::string_view mountinfo,
                                             std::string_view prefer_root) {
  std::vector<CgroupMount> all;
  for (const auto& line : split(mountinfo, '\n')) {
    std::vector<std::string> f;
    for (auto& w : split(line, ' '))
      if (!w.empty()) f.push_back(w);
    auto sep = std::find(f.begin(), f.end(), "-");
    if (sep == f.end() || f.end() - sep < 4 || sep - f.begin() < 6) continue;
    const std::string& fstype = sep[1];
    if (fstype != "cgroup" && fstype != "cgroup2") continue;
    CgroupMount m;
    m.device = f[2];
    m.root = unescape_mount_field(f[3]);
    m.mount_point = unescape_mount_field(f[4]);
    m.v2 = fstype == "cgroup2";
    if (!m.v2) {
      for (auto& opt : split(sep[3], ','))
        if (is_v1_controller(opt)) m.controllers.push_back(opt);
      if (m.controllers.empty()) continue;
    }
    all.push_back(std::move(m));
  }
  auto score = [&](const CgroupMount& m) {
    return (path_is_under(m.mount_point, prefer_root) ? 2 : 0) + (m.root == "/" ? 1 : 0);
  };
  std::vector<CgroupMount> out;
  for (auto& m : all) {
    auto same = std::find_if(out.begin(), out.end(),
                             [&](const CgroupMount& o) { return o.device == m.device; });
    if (same == out.end())
      out.push_back(m);
    else if (score(m) > score(*same))
      *same = m;
  }
  return out;
}

std::map<std::string, std::string> parse_proc_cgroup(std::string_view text) {
  std::map<std::string, std::string> out;
  for (const auto& line : split(text, '\n')) {
    auto a = line.find(':');
    if (a == std::string::npos) continue;
    auto b = line.find(':', a + 1);
    if (b == std::string::npos) continue;
    std::string ctrls = line.substr(a + 1, b - a - 1);
    std::string path = line.substr(b + 1);
    if (ctrls.empty()) {
      out[""] = path;
      continue;
    }
    for (auto& c : split(ctrls, ',')) out[c] = path;
  }
  return out;
}

std::string expand_slice(const std::string& slice) {
  const std::string suffix = ".slice";
  auto bad = [&]() { return Error("linux.cgroupsPath: invalid slice name \"" + slice + "\""); };
  if (slice.size() <= suffix.size() ||
      slice.compare(slice.size() - suffix.size(), suffix.size(), suffix) != 0 ||
      slice.find('/') != std::string::npos)
    throw bad();
  std::string name = slice.substr(0, slice.size() - suffix.size());
  if (name == "-") return "/";
  std::string path, prefix;
  for (const auto& component : split(name, '-')) {
    if (component.empty()) throw bad();
    path += "/" + prefix + component + suffix;
    prefix += component + "-";
  }
  return path;
}

std::optional<std::string> systemd_to_cgroupfs(const std::string& path) {
  if (path.empty() || path[0] == '/') return std::nullopt;
  auto parts = split(path, ':');
  if (parts.size() != 3) return std::nullopt;
  const std::string slice = parts[0].empty() ? "system.slice" : parts[0];
  const std::string& prefix = parts[1];
  const std::string& name = parts[2];
  if (name.empty() || name.find('/') != std::string::npos || prefix.find('/') != std::string::npos)
    throw Error("linux.cgroupsPath: invalid unit name in \"" + path +
                "\" (want slice:prefix:name)");
  std::string unit;
  if (name.size() > 6 && name.compare(name.size() - 6, 6, ".slice") == 0)
    unit = name;
  else
    unit = (prefix.empty() ? name : prefix + "-" + name) + ".scope";
  return clean_path(expand_slice(slice) + "/" + unit);
}

std::optional<std::string> leaf_of_init(const std::string& container_dir,
                                        const std::string& mount_point,
                                        const std::string& mount_root,
                                        const std::string& init_cgroup) {
  if (init_cgroup.empty() || init_cgroup[0] != '/') return std::nullopt;
  std::string dir =
      clean_path(join_paths(mount_point, relative_to_mount_root(init_cgroup, mount_root)));
  // only a cgroup strictly below the container's: never one outside it
  if (dir == container_dir || !path_is_under(dir, container_dir)) return std::nullopt;
  return dir;
}

std::string inner_path(const std::string& cgroups_path, const std::string& container_id) {
  auto relative = [](const std::string& p) {
    std::string c = clean_path("/" + p);  // a relative path must not climb out with ".."
    return c == "/" ? std::string() : c.substr(1);
  };
  if (cgroups_path.empty()) return relative(container_id);
  if (auto s = systemd_to_cgroupfs(cgroups_path)) return *s;
  if (cgroups_path[0] == '/') return clean_path(cgroups_path);
  return relative(cgroups_path);
}

ResolvedCgroups resolve_cgroup_dirs(CgroupLayout layout, const std::vector<CgroupMount>& mounts,
                                    const std::map<std::string, std::string>& own,
                                    const std::string& inner, const std::string& mount_root) {
  ResolvedCgroups r;
  const bool relative = inner.empty() || inner[0] != '/';
  auto own_of = [&](const std::string& key) -> std::string {
    auto it = own.find(key);
    return it == own.end() || it->second.empty() ? "/" : it->second;
  };
  if (layout != CgroupLayout::v2) {
    for (const auto& m : mounts) {
      if (m.v2) continue;
      std::string path;
      if (!relative) {
        path = join_paths(m.mount_point, inner);
      } else {
        std::string mine = "/";
        for (const auto& c : m.controllers)
          if (own.count(c)) {
            mine = own_of(c);
            break;
          }
        path = join_paths(m.mount_point, relative_to_mount_root(mine, m.root) + "/" + inner);
      }
      CgroupDir d;
      d.controllers = m.controllers;
      d.mount = m.mount_point;
      d.path = path;
      r.v1.push_back(std::move(d));
    }
    if (r.v1.empty()) throw Error("cgroups: no cgroup v1 hierarchy is mounted");
  }
  if (layout != CgroupLayout::v1) {
    const std::string want = layout == CgroupLayout::v2 ? mount_root : mount_root + "/unified";
    const CgroupMount* u = nullptr;  // the one at `want`, else the first cgroup2 mount
    for (const auto& m : mounts)
      if (m.v2 && (u == nullptr || (m.mount_point == want && u->mount_point != want))) u = &m;
    if (u == nullptr) throw Error("cgroups: no cgroup2 filesystem is mounted (want " + want + ")");
    std::string path;
    if (!relative) {
      path = join_paths(u->mount_point, inner);
    } else {
      std::string mine = relative_to_mount_root(own_of(""), u->root);
      if (layout == CgroupLayout::v2) mine = parent_dir(mine);
      path = join_paths(u->mount_point, mine + "/" + inner);
    }
    r.unified.emplace();
    r.unified->mount = u->mount_point;
    r.unified->path = path;
  }
  return r;
}

nlohmann::json dir_to_json(const CgroupDir& d) {
  return {
      {"controllers", d.controllers}, {"mount", d.mount}, {"path", d.path}, {"created", d.created}};
}

CgroupDir dir_from_json(const nlohmann::json& j) {
  CgroupDir d;
  try {
    auto list = [&](const char* key) {
      return j.contains(key) && !j[key].is_null() ? j[key].get<std::vector<std::string>>()
                                                  : std::vector<std::string>{};
    };
    d.controllers = list("controllers");
    d.mount = j.at("mount").get<std::string>();
    d.path = j.at("path").get<std::string>();
    d.created = list("created");
  } catch (const nlohmann::json::exception& e) {
    throw Error(std::string("cgroup state: ") + e.what());
  }
  // A tampered state file must not make destroy() rmdir arbitrary paths.
  if (d.mount.empty() || d.mount[0] != '/' ||
      !path_is_under(clean_path(d.path), clean_path(d.mount)))
    throw Error("cgroup state: " + d.path + " is not below " + d.mount);
  for (const auto& c : d.created)
    if (!path_is_under(clean_path(c), clean_path(d.mount)) ||
        clean_path(c) == clean_path(d.mount) || !path_is_under(clean_path(d.path), clean_path(c)))
      throw Error("cgroup state: created directory " + c + " is not on the way to " + d.path);
  return d;
}

}  // namespace racker::runtime::cgroups_internal
