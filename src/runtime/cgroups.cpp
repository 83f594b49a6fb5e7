// Cgroup managers: v1 (one directory per mounted hierarchy), v2 (one directory in the unified
// hierarchy, devices through an eBPF program) and hybrid (v1 for every v1 controller plus the
// same cgroup in the cgroup2 mount at /sys/fs/cgroup/unified). Path semantics follow runc's
// cgroupfs managers so existing bundles land where users expect them.
#include "runtime/cgroups.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <functional>
#include <thread>

#include "base/error.hpp"
#include "base/fd.hpp"
#include "base/fs.hpp"
#include "base/log.hpp"
#include "base/strings.hpp"
#include "runtime/cgroups_internal.hpp"

namespace racker::runtime {

namespace cgroups_internal {

std::string errno_text(int err) {
  std::string s = std::strerror(err);
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

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

uint64_t shares_to_weight(uint64_t shares) {
  if (shares == 0) return 0;
  if (shares < 2) shares = 2;
  return 1 + ((shares - 2) * 9999) / 262142;
}

uint64_t blkio_weight_to_io_weight(uint64_t weight) {
  if (weight == 0) return 0;
  if (weight < 10) weight = 10;
  return 1 + (weight - 10) * 9999 / 990;
}

int64_t swap_to_v2(int64_t swap, int64_t limit) {
  // Like cgroup v1: memory unlimited and swap unset means "both unlimited".
  if (limit == -1 && swap == 0) return -1;
  if (swap == -1 || swap == 0) return swap;
  if (limit == 0 || limit == -1)
    throw Error("a swap limit needs a memory limit (memory.limit)", EINVAL);
  if (limit < 0) throw Error("invalid memory limit " + std::to_string(limit), EINVAL);
  if (swap < limit)
    throw Error("memory+swap limit " + std::to_string(swap) + " is below the memory limit " +
                    std::to_string(limit),
                EINVAL);
  return swap - limit;
}

std::string cpu_max_value(std::optional<int64_t> quota, std::optional<uint64_t> period,
                          std::string_view current) {
  auto cur = split(trim(current), ' ');
  std::string q = !cur.empty() && !cur[0].empty() ? cur[0] : "max";
  std::string p = cur.size() > 1 ? cur[1] : "100000";
  if (quota) q = *quota > 0 ? std::to_string(*quota) : "max";
  if (period) p = std::to_string(*period);
  return q + " " + p;
}

std::string device_rule_line(const oci::DeviceRule& rule) {
  auto num = [](const std::optional<int64_t>& v) {
    return v && *v >= 0 ? std::to_string(*v) : std::string("*");
  };
  char type = rule.type == 'b' || rule.type == 'c' ? rule.type : 'a';
  std::string access = rule.access.empty() ? "rwm" : rule.access;
  if (type == 'a') return "a *:* " + access;
  return std::string(1, type) + " " + num(rule.major) + ":" + num(rule.minor) + " " + access;
}

const std::vector<oci::DeviceRule>& default_device_rules() {
  static const std::vector<oci::DeviceRule> rules = [] {
    auto rule = [](char type, std::optional<int64_t> major, std::optional<int64_t> minor,
                   const char* access) {
      return oci::DeviceRule{
          .allow = true, .type = type, .major = major, .minor = minor, .access = access};
    };
    return std::vector<oci::DeviceRule>{
        rule('c', std::nullopt, std::nullopt, "m"),  // mknod of any device node
        rule('b', std::nullopt, std::nullopt, "m"),
        rule('c', 1, 3, "rwm"),               // /dev/null
        rule('c', 1, 5, "rwm"),               // /dev/zero
        rule('c', 1, 7, "rwm"),               // /dev/full
        rule('c', 5, 0, "rwm"),               // /dev/tty
        rule('c', 1, 8, "rwm"),               // /dev/random
        rule('c', 1, 9, "rwm"),               // /dev/urandom
        rule('c', 5, 1, "rwm"),               // /dev/console
        rule('c', 5, 2, "rwm"),               // /dev/ptmx
        rule('c', 136, std::nullopt, "rwm"),  // /dev/pts/*
    };
  }();
  return rules;
}

std::string hugepage_name(uint64_t kib) {
  // The kernel's mem_fmt(): whole GB, MB or KB, rounding down.
  if (kib >= 1024 * 1024) return std::to_string(kib / (1024 * 1024)) + "GB";
  if (kib >= 1024) return std::to_string(kib / 1024) + "MB";
  return std::to_string(kib) + "KB";
}

std::vector<std::string> host_hugepage_names(const std::string& dir) {
  std::vector<std::string> out;
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return out;
  while (auto* e = ::readdir(d)) {
    std::string_view n = e->d_name;
    if (!starts_with(n, "hugepages-") || n.size() < 13 || n.substr(n.size() - 2) != "kB") continue;
    if (auto kib = parse_uint(n.substr(10, n.size() - 12))) out.push_back(hugepage_name(*kib));
  }
  ::closedir(d);
  std::sort(out.begin(), out.end());
  return out;
}

// --- eBPF device filter --------------------------------------------------------------------

std::vector<bpf_insn> device_filter_program(const std::vector<oci::DeviceRule>& rules) {
  std::vector<bpf_insn> prog;
  auto insn = [](uint8_t code, uint8_t dst, uint8_t src, int16_t off, int32_t imm) {
    bpf_insn i{};
    i.code = code;
    i.dst_reg = dst & 0xf;
    i.src_reg = src & 0xf;
    i.off = off;
    i.imm = imm;
    return i;
  };
  // struct bpf_cgroup_dev_ctx { u32 access_type (access << 16 | type); u32 major; u32 minor; }
  prog.push_back(insn(BPF_LDX | BPF_MEM | BPF_W, 2, 1, 0, 0));
  prog.push_back(insn(BPF_ALU | BPF_AND | BPF_K, 2, 0, 0, 0xffff));  // r2 = device type
  prog.push_back(insn(BPF_LDX | BPF_MEM | BPF_W, 3, 1, 0, 0));
  prog.push_back(insn(BPF_ALU | BPF_RSH | BPF_K, 3, 0, 0, 16));  // r3 = requested access
  prog.push_back(insn(BPF_LDX | BPF_MEM | BPF_W, 4, 1, 4, 0));   // r4 = major
  prog.push_back(insn(BPF_LDX | BPF_MEM | BPF_W, 5, 1, 8, 0));   // r5 = minor
  // Rules apply in order like v1's devices.allow/deny writes, so the last match wins: test
  // them last to first and return at the first match.
  for (size_t i = rules.size(); i-- > 0;) {
    const auto& r = rules[i];
    int32_t mask = 0;
    for (char c : r.access.empty() ? std::string("rwm") : r.access)
      mask |= c == 'r'   ? BPF_DEVCG_ACC_READ
              : c == 'w' ? BPF_DEVCG_ACC_WRITE
              : c == 'm' ? BPF_DEVCG_ACC_MKNOD
                         : 0;
    if (mask == 0) continue;
    const int32_t all = BPF_DEVCG_ACC_READ | BPF_DEVCG_ACC_WRITE | BPF_DEVCG_ACC_MKNOD;
    std::vector<bpf_insn> conds;  // jumps with off = 0 to be patched to "skip this rule"
    if (r.type == 'b' || r.type == 'c')
      conds.push_back(insn(BPF_JMP32 | BPF_JNE | BPF_K, 2, 0, 0,
                           r.type == 'b' ? BPF_DEVCG_DEV_BLOCK : BPF_DEVCG_DEV_CHAR));
    if (mask != all) {
      conds.push_back(insn(BPF_ALU | BPF_MOV | BPF_X, 1, 3, 0, 0));
      if (r.allow) {
        // an allow rule matches when every requested access is in it
        conds.push_back(insn(BPF_ALU | BPF_AND | BPF_K, 1, 0, 0, all & ~mask));
        conds.push_back(insn(BPF_JMP32 | BPF_JNE | BPF_K, 1, 0, 0, 0));
      } else {
        // a deny rule matches when any requested access is in it
        conds.push_back(insn(BPF_ALU | BPF_AND | BPF_K, 1, 0, 0, mask));
        conds.push_back(insn(BPF_JMP32 | BPF_JEQ | BPF_K, 1, 0, 0, 0));
      }
    }
    if (r.type != 'a' && r.major && *r.major >= 0)
      conds.push_back(insn(BPF_JMP32 | BPF_JNE | BPF_K, 4, 0, 0, static_cast<int32_t>(*r.major)));
    if (r.type != 'a' && r.minor && *r.minor >= 0)
      conds.push_back(insn(BPF_JMP32 | BPF_JNE | BPF_K, 5, 0, 0, static_cast<int32_t>(*r.minor)));
    const size_t n = conds.size() + 2;
    for (size_t k = 0; k < conds.size(); ++k) {
      uint8_t cls = BPF_CLASS(conds[k].code);
      if (cls == BPF_JMP32 || cls == BPF_JMP) conds[k].off = static_cast<int16_t>(n - (k + 1));
      prog.push_back(conds[k]);
    }
    prog.push_back(insn(BPF_ALU64 | BPF_MOV | BPF_K, 0, 0, 0, r.allow ? 1 : 0));
    prog.push_back(insn(BPF_JMP | BPF_EXIT, 0, 0, 0, 0));
    if (conds.empty()) return prog;  // matches everything: earlier rules are unreachable
  }
  prog.push_back(insn(BPF_ALU64 | BPF_MOV | BPF_K, 0, 0, 0, 0));
  prog.push_back(insn(BPF_JMP | BPF_EXIT, 0, 0, 0, 0));
  return prog;
}

namespace {

long bpf(int cmd, bpf_attr* attr) {
  return ::syscall(SYS_bpf, cmd, attr, sizeof(*attr));
}

UniqueFd load_device_program(const std::vector<bpf_insn>& prog) {
  static const char kLicense[] = "Apache";
  bpf_attr attr;
  std::memset(&attr, 0, sizeof attr);
  attr.prog_type = BPF_PROG_TYPE_CGROUP_DEVICE;
  attr.insns = reinterpret_cast<uintptr_t>(prog.data());
  attr.insn_cnt = static_cast<uint32_t>(prog.size());
  attr.license = reinterpret_cast<uintptr_t>(kLicense);
  long fd = bpf(BPF_PROG_LOAD, &attr);
  if (fd >= 0) return UniqueFd(static_cast<int>(fd));
  int err = errno;
  // Load again with the verifier log, only to explain the failure.
  std::string log(16 * 1024, '\0');
  attr.log_buf = reinterpret_cast<uintptr_t>(log.data());
  attr.log_size = static_cast<uint32_t>(log.size());
  attr.log_level = 1;
  fd = bpf(BPF_PROG_LOAD, &attr);
  if (fd >= 0) ::close(static_cast<int>(fd));
  log.resize(std::strlen(log.c_str()));
  throw Error("load eBPF device filter: " + errno_text(err) + (log.empty() ? "" : ": " + trim(log)),
              err);
}

}  // namespace

void attach_device_filter(const std::string& cgroup_dir,
                          const std::vector<oci::DeviceRule>& rules) {
  UniqueFd prog = load_device_program(device_filter_program(rules));
  UniqueFd dir(::open(cgroup_dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!dir) throw Error("open " + cgroup_dir + ": " + errno_text(errno), errno);

  std::vector<uint32_t> old(64);
  bpf_attr attr;
  std::memset(&attr, 0, sizeof attr);
  attr.query.target_fd = static_cast<uint32_t>(dir.get());
  attr.query.attach_type = BPF_CGROUP_DEVICE;
  attr.query.prog_ids = reinterpret_cast<uintptr_t>(old.data());
  attr.query.prog_cnt = static_cast<uint32_t>(old.size());
  if (bpf(BPF_PROG_QUERY, &attr) != 0) {
    int err = errno;
    throw Error("query eBPF programs of " + cgroup_dir + ": " + errno_text(err), err);
  }
  old.resize(std::min<size_t>(attr.query.prog_cnt, old.size()));

  std::memset(&attr, 0, sizeof attr);
  attr.target_fd = static_cast<uint32_t>(dir.get());
  attr.attach_bpf_fd = static_cast<uint32_t>(prog.get());
  attr.attach_type = BPF_CGROUP_DEVICE;
  attr.attach_flags = BPF_F_ALLOW_MULTI;
  if (bpf(BPF_PROG_ATTACH, &attr) != 0) {
    int err = errno;
    throw Error("attach eBPF device filter to " + cgroup_dir + ": " + errno_text(err), err);
  }
  // The new filter is in place; only now drop the old ones, so there is no open window.
  for (uint32_t id : old) {
    std::memset(&attr, 0, sizeof attr);
    attr.prog_id = id;
    long fd = bpf(BPF_PROG_GET_FD_BY_ID, &attr);
    if (fd < 0) continue;
    UniqueFd old_prog(static_cast<int>(fd));
    std::memset(&attr, 0, sizeof attr);
    attr.target_fd = static_cast<uint32_t>(dir.get());
    attr.attach_bpf_fd = static_cast<uint32_t>(old_prog.get());
    attr.attach_type = BPF_CGROUP_DEVICE;
    if (bpf(BPF_PROG_DETACH, &attr) != 0)
      log::warn("detach old eBPF device filter " + std::to_string(id) + " from " + cgroup_dir +
                ": " + errno_text(errno));
  }
}

}  // namespace cgroups_internal

using namespace cgroups_internal;

// --- host helpers ---------------------------------------------------------------------------

namespace {

constexpr auto kPoll = std::chrono::milliseconds(10);

// Writes value to an existing cgroup file; returns 0 or the errno.
int write_raw(const std::string& path, std::string_view value) noexcept {
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CLOEXEC));
  if (!fd) return errno;
  if (!write_all(fd.get(), value.data(), value.size())) return errno;
  return 0;
}

// Writes value, or throws "FIELD: write PATH: reason".
void write_knob(std::string_view field, const std::string& path, std::string_view value) {
  if (int err = write_raw(path, value))
    throw Error(std::string(field) + ": write " + path + ": " + errno_text(err), err);
}

std::string read_knob(const std::string& path) {
  try {
    return trim(read_file(path));
  } catch (const Error& e) {
    throw Error("read " + path + ": " + errno_text(e.err() ? e.err() : EIO), e.err());
  }
}

std::string str(int64_t v) {
  return std::to_string(v);
}
std::string str(uint64_t v) {
  return std::to_string(v);
}

// The config.json path of a resource field, e.g. linux.resources.memory.limit.
std::string field(std::string_view rest) {
  return "linux.resources." + std::string(rest);
}

std::vector<std::string> words(const std::string& s) {
  std::vector<std::string> out;
  for (auto& w : split(s, ' '))
    for (auto& x : split(trim(w), '\n'))
      if (!trim(x).empty()) out.push_back(trim(x));
  return out;
}

// mkdir each component of d.path below its mount, remembering what we made.
void make_dir(CgroupDir& d) {
  std::string rel = d.path.substr(d.mount.size());
  std::string cur = d.mount;
  for (const auto& comp : split(rel, '/')) {
    if (comp.empty()) continue;
    cur += "/" + comp;
    if (::mkdir(cur.c_str(), 0755) == 0) {
      d.created.push_back(cur);
    } else if (errno != EEXIST) {
      int err = errno;
      throw Error("create cgroup " + cur + ": " + errno_text(err), err);
    }
  }
}

// rmdir dir after its sub-cgroups (made by the container); returns 0 or the errno.
int rmdir_tree(const std::string& dir) noexcept {
  if (DIR* d = ::opendir(dir.c_str())) {
    std::vector<std::string> subs;
    while (auto* e = ::readdir(d)) {
      std::string_view n = e->d_name;
      if (n != "." && n != ".." && e->d_type == DT_DIR) subs.emplace_back(n);
    }
    ::closedir(d);
    for (const auto& s : subs) rmdir_tree(dir + "/" + s);
  }
  if (::rmdir(dir.c_str()) == 0 || errno == ENOENT) return 0;
  return errno;
}

// Removes what make_dir created, leaf first. Only the leaf (ours alone) is emptied of
// sub-cgroups and retried while busy; an intermediate still busy holds someone else's cgroup.
void remove_dirs(CgroupDir& d) noexcept {
  std::vector<std::string> left;
  for (auto it = d.created.rbegin(); it != d.created.rend(); ++it) {
    const bool leaf = *it == d.path;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(1);
    int err = 0;
    for (;;) {
      if (leaf) {
        err = rmdir_tree(*it);
      } else {
        err = ::rmdir(it->c_str()) == 0 || errno == ENOENT ? 0 : errno;
      }
      if (err != EBUSY || !leaf || std::chrono::steady_clock::now() > deadline) break;
      std::this_thread::sleep_for(kPoll);
    }
    if (err != 0) {
      log::debug("remove cgroup " + *it + ": " + errno_text(err));
      left.insert(left.begin(), *it);
      if (leaf) {
        // keep the parents too: they are not empty
        for (auto up = std::next(it); up != d.created.rend(); ++up) left.insert(left.begin(), *up);
        break;
      }
    }
  }
  d.created = std::move(left);
}

void collect_pids(const std::string& dir, std::vector<pid_t>& out) {
  auto procs = read_file_if_exists(dir + "/cgroup.procs");
  if (!procs) return;
  for (auto& w : split(*procs, '\n'))
    if (auto v = parse_int(trim(w)); v && *v > 0) out.push_back(static_cast<pid_t>(*v));
  if (DIR* d = ::opendir(dir.c_str())) {
    std::vector<std::string> subs;
    while (auto* e = ::readdir(d)) {
      std::string_view n = e->d_name;
      if (n != "." && n != ".." && e->d_type == DT_DIR) subs.emplace_back(n);
    }
    ::closedir(d);
    for (const auto& s : subs) collect_pids(dir + "/" + s, out);
  }
}

std::vector<oci::DeviceRule> with_default_devices(const std::vector<oci::DeviceRule>& rules) {
  std::vector<oci::DeviceRule> all = rules;
  const auto& defs = default_device_rules();
  all.insert(all.end(), defs.begin(), defs.end());
  return all;
}

// Is a value a configured v1-style "set" (runc treats 0 as unset for these)?
template <typename T>
bool set_nonzero(const std::optional<T>& v) {
  return v && *v != 0;
}

void check_hugepage_sizes(const oci::Resources& res) {
  if (res.hugepage_limits.empty()) return;
  auto have = host_hugepage_names();
  for (size_t i = 0; i < res.hugepage_limits.size(); ++i) {
    const auto& ps = res.hugepage_limits[i].page_size;
    if (std::find(have.begin(), have.end(), ps) != have.end()) continue;
    std::string list;
    for (const auto& h : have) list += (list.empty() ? "" : ", ") + h;
    throw Error(field("hugepageLimits[" + std::to_string(i) + "].pageSize") + ": \"" + ps +
                    "\" is not a huge page size of this host (" +
                    (list.empty() ? "it has none" : "it has " + list) + ")",
                EINVAL);
  }
}

void check_unified_keys(const oci::Resources& res) {
  for (const auto& [key, value] : res.unified)
    if (key.empty() || key.find('/') != std::string::npos || key.find("..") != std::string::npos)
      throw Error(field("unified") + ": invalid key \"" + key + "\"", EINVAL);
}

// --- v1 writers -----------------------------------------------------------------------------

void v1_memory(const CgroupDir& d, const oci::MemoryResources& m, bool updating) {
  auto f = [&](const char* name) { return d.path + "/" + name; };
  std::optional<int64_t> limit = m.limit, swap = m.swap;
  const bool have_memsw = path_exists(f("memory.memsw.limit_in_bytes"));
  if (limit && *limit == -1 && !swap && have_memsw) swap = -1;
  if (swap && !have_memsw) {
    if (*swap != -1 && *swap != 0)
      throw Error(field("memory.swap") + ": " + f("memory.memsw.limit_in_bytes") +
                      " does not exist (swap accounting is off on this host)",
                  ENOENT);
    swap.reset();
  }
  if (updating && m.check_before_update.value_or(false) && limit && *limit > 0) {
    auto usage = parse_uint(read_knob(f("memory.usage_in_bytes")));
    if (usage && *usage > static_cast<uint64_t>(*limit))
      throw Error(field("memory.limit") + ": " + str(*limit) + " is below the current usage " +
                      str(*usage) + " of " + d.path,
                  EBUSY);
  }
  auto write_limit = [&] {
    if (limit) write_knob(field("memory.limit"), f("memory.limit_in_bytes"), str(*limit));
  };
  auto write_swap = [&] {
    if (swap) write_knob(field("memory.swap"), f("memory.memsw.limit_in_bytes"), str(*swap));
  };
  // memory.limit_in_bytes may never exceed memsw.limit_in_bytes, so when the new memsw is
  // above the current memory limit it goes first; otherwise memory goes first (runc's order).
  bool swap_first = false;
  if (limit && swap) {
    auto cur = parse_uint(read_knob(f("memory.limit_in_bytes")));
    swap_first = *swap == -1 || (cur && *cur < static_cast<uint64_t>(*swap));
  }
  if (swap_first) {
    write_swap();
    write_limit();
  } else {
    write_limit();
    write_swap();
  }
  if (m.reservation)
    write_knob(field("memory.reservation"), f("memory.soft_limit_in_bytes"), str(*m.reservation));
  if (m.kernel) {
    // Kernels since 5.16 accept and ignore (or reject) kmem limits; that is not worth failing a
    // container for, but anything else is.
    if (!path_exists(f("memory.kmem.limit_in_bytes"))) {
      log::debug(field("memory.kernel") +
                 ": no memory.kmem.limit_in_bytes on this kernel; ignored");
    } else if (int err = write_raw(f("memory.kmem.limit_in_bytes"), str(*m.kernel))) {
      if (err != EOPNOTSUPP && err != EINVAL)
        throw Error(field("memory.kernel") + ": write " + f("memory.kmem.limit_in_bytes") + ": " +
                        errno_text(err),
                    err);
      log::debug(field("memory.kernel") + ": kernel refused a kmem limit (" + errno_text(err) +
                 "); ignored");
    }
  }
  if (m.kernel_tcp)
    write_knob(field("memory.kernelTCP"), f("memory.kmem.tcp.limit_in_bytes"), str(*m.kernel_tcp));
  if (m.swappiness)
    write_knob(field("memory.swappiness"), f("memory.swappiness"), str(*m.swappiness));
  if (m.disable_oom_killer)
    write_knob(field("memory.disableOOMKiller"), f("memory.oom_control"),
               *m.disable_oom_killer ? "1" : "0");
  if (m.use_hierarchy)
    write_knob(field("memory.useHierarchy"), f("memory.use_hierarchy"),
               *m.use_hierarchy ? "1" : "0");
}

void v1_cpu(const CgroupDir& d, const oci::CpuResources& c) {
  auto f = [&](const char* name) { return d.path + "/" + name; };
  if (set_nonzero(c.shares)) {
    write_knob(field("cpu.shares"), f("cpu.shares"), str(*c.shares));
    auto got = parse_uint(read_knob(f("cpu.shares")));
    if (got && *got != *c.shares)
      throw Error(field("cpu.shares") + ": the kernel clamped " + str(*c.shares) + " to " +
                      str(*got) + " (allowed: 2 to 262144)",
                  EINVAL);
  }
  // A smaller period can be refused while the old quota/period ratio exceeds the parent's;
  // then it is retried after the quota.
  bool period_pending = false;
  if (set_nonzero(c.period)) {
    int err = write_raw(f("cpu.cfs_period_us"), str(*c.period));
    if (err == EINVAL && set_nonzero(c.quota))
      period_pending = true;
    else if (err)
      throw Error(
          field("cpu.period") + ": write " + f("cpu.cfs_period_us") + ": " + errno_text(err), err);
  }
  if (set_nonzero(c.quota)) write_knob(field("cpu.quota"), f("cpu.cfs_quota_us"), str(*c.quota));
  if (period_pending) write_knob(field("cpu.period"), f("cpu.cfs_period_us"), str(*c.period));
  if (c.burst) write_knob(field("cpu.burst"), f("cpu.cfs_burst_us"), str(*c.burst));
  if (set_nonzero(c.realtime_period))
    write_knob(field("cpu.realtimePeriod"), f("cpu.rt_period_us"), str(*c.realtime_period));
  if (set_nonzero(c.realtime_runtime))
    write_knob(field("cpu.realtimeRuntime"), f("cpu.rt_runtime_us"), str(*c.realtime_runtime));
  if (c.idle) write_knob(field("cpu.idle"), f("cpu.idle"), str(*c.idle));
}

// A new cpuset cgroup starts with empty cpus/mems and refuses tasks until they are set: copy
// them down from the parent for every level of the path.
void v1_cpuset_inherit(const CgroupDir& d) {
  std::string rel = d.path.substr(d.mount.size());
  std::string parent = d.mount;
  for (const auto& comp : split(rel, '/')) {
    if (comp.empty()) continue;
    std::string cur = parent + "/" + comp;
    for (const char* file : {"cpuset.cpus", "cpuset.mems"}) {
      if (!read_knob(cur + "/" + file).empty()) continue;
      write_knob("cpuset", cur + "/" + file, read_knob(parent + "/" + file));
    }
    parent = cur;
  }
}

void v1_cpuset(const CgroupDir& d, const oci::CpuResources& c) {
  if (!c.cpus.empty()) write_knob(field("cpu.cpus"), d.path + "/cpuset.cpus", c.cpus);
  if (!c.mems.empty()) write_knob(field("cpu.mems"), d.path + "/cpuset.mems", c.mems);
}

std::string pids_max(int64_t limit) {
  return limit > 0 ? str(limit) : "max";
}

void v1_blkio(const CgroupDir& d, const oci::BlockIoResources& b) {
  // The knob depends on the I/O scheduler (CFQ: blkio.weight, BFQ: blkio.bfq.weight); a
  // requested knob the host lacks is an error, not a silent no-op.
  auto pick = [&](const std::string& fld, std::initializer_list<const char*> names) {
    std::string tried;
    for (const char* n : names) {
      if (path_exists(d.path + "/" + n)) return d.path + "/" + n;
      tried += (tried.empty() ? "" : " nor ") + std::string(n);
    }
    throw Error(fld + ": this host's blkio cgroup has neither " + tried + " (in " + d.path + ")",
                ENOENT);
  };
  if (b.weight)
    write_knob(field("blockIO.weight"),
               pick(field("blockIO.weight"), {"blkio.weight", "blkio.bfq.weight"}),
               str(uint64_t{*b.weight}));
  if (b.leaf_weight)
    write_knob(field("blockIO.leafWeight"),
               pick(field("blockIO.leafWeight"), {"blkio.leaf_weight"}),
               str(uint64_t{*b.leaf_weight}));
  for (size_t i = 0; i < b.weight_device.size(); ++i) {
    const auto& wd = b.weight_device[i];
    std::string fld = field("blockIO.weightDevice[" + std::to_string(i) + "]");
    std::string dev = str(wd.major) + ":" + str(wd.minor) + " ";
    if (wd.weight)
      write_knob(fld, pick(fld, {"blkio.weight_device", "blkio.bfq.weight_device"}),
                 dev + str(uint64_t{*wd.weight}));
    if (wd.leaf_weight)
      write_knob(fld, pick(fld, {"blkio.leaf_weight_device"}),
                 dev + str(uint64_t{*wd.leaf_weight}));
  }
  auto throttle = [&](const char* name, const char* file,
                      const std::vector<oci::ThrottleDevice>& v) {
    for (size_t i = 0; i < v.size(); ++i) {
      std::string fld = field(std::string("blockIO.") + name + "[" + std::to_string(i) + "]");
      write_knob(fld, pick(fld, {file}),
                 str(v[i].major) + ":" + str(v[i].minor) + " " + str(v[i].rate));
    }
  };
  throttle("throttleReadBpsDevice", "blkio.throttle.read_bps_device", b.throttle_read_bps);
  throttle("throttleWriteBpsDevice", "blkio.throttle.write_bps_device", b.throttle_write_bps);
  throttle("throttleReadIOPSDevice", "blkio.throttle.read_iops_device", b.throttle_read_iops);
  throttle("throttleWriteIOPSDevice", "blkio.throttle.write_iops_device", b.throttle_write_iops);
}

// hugetlb.<size>.<suffix>, plus the reservation counter where the kernel has one.
void write_hugetlb(const std::string& dir, const std::vector<oci::HugepageLimit>& limits,
                   const char* suffix, const char* rsvd_suffix) {
  for (size_t i = 0; i < limits.size(); ++i) {
    const auto& h = limits[i];
    std::string fld = field("hugepageLimits[" + std::to_string(i) + "]");
    write_knob(fld, dir + "/hugetlb." + h.page_size + "." + suffix, str(h.limit));
    std::string rsvd = dir + "/hugetlb." + h.page_size + "." + rsvd_suffix;
    if (path_exists(rsvd)) write_knob(fld, rsvd, str(h.limit));
  }
}

void v1_devices(const CgroupDir& d, const std::vector<oci::DeviceRule>& rules) {
  const std::string allow = d.path + "/devices.allow", deny = d.path + "/devices.deny";
  write_knob(field("devices"), deny, "a");
  for (size_t i = 0; i < rules.size(); ++i)
    write_knob(field("devices[" + std::to_string(i) + "]"), rules[i].allow ? allow : deny,
               device_rule_line(rules[i]));
  // A nested cgroup cannot allow what its parent denies: a default the parent refuses stays
  // denied rather than failing the container.
  for (const auto& r : default_device_rules())
    if (int err = write_raw(allow, device_rule_line(r)))
      log::debug("devices: cannot allow \"" + device_rule_line(r) + "\" in " + d.path + ": " +
                 errno_text(err));
}

// --- v2 writers -----------------------------------------------------------------------------

void v2_memory(const CgroupDir& d, const oci::MemoryResources& m, bool updating) {
  auto f = [&](const char* name) { return d.path + "/" + name; };
  auto val = [](int64_t v) { return v == -1 ? std::string("max") : str(v); };
  if (updating && m.check_before_update.value_or(false) && m.limit && *m.limit > 0) {
    auto usage = parse_uint(read_knob(f("memory.current")));
    if (usage && *usage > static_cast<uint64_t>(*m.limit))
      throw Error(field("memory.limit") + ": " + str(*m.limit) + " is below the current usage " +
                      str(*usage) + " of " + d.path,
                  EBUSY);
  }
  if (m.swap || (m.limit && *m.limit == -1)) {
    int64_t swap;
    try {
      swap = swap_to_v2(m.swap.value_or(0), m.limit.value_or(0));
    } catch (const Error& e) {
      throw e.with_context(field("memory.swap"));
    }
    if (swap != 0 || m.swap) {
      // No swap accounting: "max" and 0 mean nothing to enforce, so they are not errors.
      int err = write_raw(f("memory.swap.max"), val(swap));
      if (err && !(err == ENOENT && (swap == -1 || swap == 0)))
        throw Error(
            field("memory.swap") + ": write " + f("memory.swap.max") + ": " + errno_text(err), err);
    }
  }
  if (m.limit) write_knob(field("memory.limit"), f("memory.max"), val(*m.limit));
  if (m.reservation) write_knob(field("memory.reservation"), f("memory.low"), val(*m.reservation));
  if (m.kernel || m.kernel_tcp || m.swappiness || m.disable_oom_killer)
    log::debug(
        "linux.resources.memory: kernel, kernelTCP, swappiness and disableOOMKiller have no "
        "cgroup v2 equivalent; ignored");
}

void v2_cpu(const CgroupDir& d, const oci::CpuResources& c) {
  auto f = [&](const char* name) { return d.path + "/" + name; };
  if (set_nonzero(c.shares))
    write_knob(field("cpu.shares"), f("cpu.weight"), str(shares_to_weight(*c.shares)));
  if (set_nonzero(c.quota) || set_nonzero(c.period)) {
    std::optional<int64_t> quota;
    if (set_nonzero(c.quota)) quota = c.quota;
    std::optional<uint64_t> period;
    if (set_nonzero(c.period)) period = c.period;
    auto cur = read_file_if_exists(f("cpu.max")).value_or("");
    write_knob(field(quota ? "cpu.quota" : "cpu.period"), f("cpu.max"),
               cpu_max_value(quota, period, cur));
  }
  if (c.burst) write_knob(field("cpu.burst"), f("cpu.max.burst"), str(*c.burst));
  if (c.idle) write_knob(field("cpu.idle"), f("cpu.idle"), str(*c.idle));
  if (!c.cpus.empty()) write_knob(field("cpu.cpus"), f("cpuset.cpus"), c.cpus);
  if (!c.mems.empty()) write_knob(field("cpu.mems"), f("cpuset.mems"), c.mems);
}

void v2_io(const CgroupDir& d, const oci::BlockIoResources& b) {
  const std::string bfq = d.path + "/io.bfq.weight";
  const bool have_bfq = path_exists(bfq);
  if (b.weight) {
    if (have_bfq)
      write_knob(field("blockIO.weight"), bfq, str(uint64_t{*b.weight}));
    else
      write_knob(field("blockIO.weight"), d.path + "/io.weight",
                 str(blkio_weight_to_io_weight(*b.weight)));
  }
  for (size_t i = 0; i < b.weight_device.size(); ++i) {
    const auto& wd = b.weight_device[i];
    std::string fld = field("blockIO.weightDevice[" + std::to_string(i) + "]");
    if (wd.leaf_weight) throw Error(fld + ".leafWeight: not supported on cgroup v2", ENOTSUP);
    if (!wd.weight) continue;
    if (!have_bfq)
      throw Error(fld + ": per-device weights need the BFQ scheduler (no " + bfq + ")", ENOENT);
    write_knob(fld, bfq, str(wd.major) + ":" + str(wd.minor) + " " + str(uint64_t{*wd.weight}));
  }
  auto max = [&](const char* name, const char* key, const std::vector<oci::ThrottleDevice>& v) {
    for (size_t i = 0; i < v.size(); ++i)
      write_knob(field(std::string("blockIO.") + name + "[" + std::to_string(i) + "]"),
                 d.path + "/io.max",
                 str(v[i].major) + ":" + str(v[i].minor) + " " + key + "=" + str(v[i].rate));
  };
  max("throttleReadBpsDevice", "rbps", b.throttle_read_bps);
  max("throttleWriteBpsDevice", "wbps", b.throttle_write_bps);
  max("throttleReadIOPSDevice", "riops", b.throttle_read_iops);
  max("throttleWriteIOPSDevice", "wiops", b.throttle_write_iops);
}

void write_unified(const CgroupDir& d, const std::map<std::string, std::string>& unified) {
  for (const auto& [key, value] : unified)
    write_knob(field("unified[" + key + "]"), d.path + "/" + key, value);
}

// Turns on controllers in cgroup.subtree_control from the hierarchy root down to the leaf's
// parent. Best effort, like runc: a controller that cannot be enabled shows up later as a
// missing file named in the error of the resource that needs it.
void enable_controllers(const CgroupDir& d, const std::vector<std::string>& wanted) {
  if (wanted.empty()) return;
  std::string cur = d.mount;
  std::vector<std::string> comps;
  for (auto& c : split(d.path.substr(d.mount.size()), '/'))
    if (!c.empty()) comps.push_back(c);
  for (size_t i = 0; i < comps.size(); ++i) {
    auto have = words(read_file_if_exists(cur + "/cgroup.controllers").value_or(""));
    auto on = words(read_file_if_exists(cur + "/cgroup.subtree_control").value_or(""));
    for (const auto& c : wanted) {
      if (std::find(have.begin(), have.end(), c) == have.end()) continue;
      if (std::find(on.begin(), on.end(), c) != on.end()) continue;
      if (int err = write_raw(cur + "/cgroup.subtree_control", "+" + c))
        log::debug("enable " + c + " in " + cur + "/cgroup.subtree_control: " + errno_text(err));
    }
    cur += "/" + comps[i];
  }
}

std::vector<std::string> controllers_of(const std::string& dir) {
  return words(read_file_if_exists(dir + "/cgroup.controllers").value_or(""));
}

void wait_until(const std::string& what, const std::function<bool()>& done,
                std::chrono::milliseconds limit) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (!done()) {
    if (std::chrono::steady_clock::now() > deadline) throw Error(what + ": timed out", ETIMEDOUT);
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

bool v2_events_flag(const std::string& dir, std::string_view key, bool want) {
  auto ev = read_file_if_exists(dir + "/cgroup.events").value_or("");
  for (auto& line : split(ev, '\n')) {
    auto w = words(line);
    if (w.size() == 2 && w[0] == key) return (w[1] == "1") == want;
  }
  return false;
}

void v2_freeze(const std::string& dir, bool freeze) {
  const char* verb = freeze ? "freeze" : "thaw";
  write_knob(verb, dir + "/cgroup.freeze", freeze ? "1" : "0");
  try {
    wait_until(
        std::string(verb) + " " + dir, [&] { return v2_events_flag(dir, "frozen", freeze); },
        std::chrono::seconds(2));
  } catch (const Error&) {
    if (freeze) write_raw(dir + "/cgroup.freeze", "0");
    throw;
  }
}

void v1_freeze(const std::string& dir, bool freeze) {
  const std::string file = dir + "/freezer.state";
  const std::string want = freeze ? "FROZEN" : "THAWED";
  const char* verb = freeze ? "freeze" : "thaw";
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  for (int i = 0;; ++i) {
    // A task in an uninterruptible sleep can keep the cgroup FREEZING; writing again retries.
    if (i % 50 == 0) write_knob(verb, file, want);
    std::string state = read_knob(file);
    if (state == want) return;
    if (std::chrono::steady_clock::now() > deadline) {
      if (freeze) write_raw(file, "THAWED");
      throw Error(std::string(verb) + " " + dir + ": still " + state + " after 2s", EBUSY);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

std::string layout_name(CgroupLayout l) {
  switch (l) {
    case CgroupLayout::v1:
      return "v1";
    case CgroupLayout::v2:
      return "v2";
    case CgroupLayout::hybrid:
      return "hybrid";
  }
  return "v1";
}

// --- managers -------------------------------------------------------------------------------

// Directory bookkeeping shared by the three backends: where the cgroup lives in each
// hierarchy, what was created, joining, listing, freezing and removal. The backends differ in
// where each resource goes.
class CgroupfsManager : public CgroupManager {
 public:
  CgroupfsManager(CgroupLayout layout, std::vector<CgroupDir> v1, std::optional<CgroupDir> unified)
      : layout_(layout), v1_(std::move(v1)), unified_(std::move(unified)) {}

  nlohmann::json save() const override {
    nlohmann::json j = {{"layout", layout_name(layout_)}, {"hierarchies", nlohmann::json::array()}};
    for (const auto& d : v1_) j["hierarchies"].push_back(dir_to_json(d));
    j["unified"] = unified_ ? dir_to_json(*unified_) : nlohmann::json(nullptr);
    return j;
  }

  void apply(pid_t pid, const oci::Resources* res) override {
    static const oci::Resources kNone;
    const oci::Resources& r = res ? *res : kNone;
    for (auto& d : v1_) {
      make_dir(d);
      if (d.has("cpuset")) v1_cpuset_inherit(d);
    }
    if (unified_) {
      make_dir(*unified_);
      enable_controllers(*unified_, unified_controllers(r));
    }
    set(r, /*updating=*/false);
    add_process(pid);
  }

  void add_process(pid_t pid) override {
    auto join = [&](const CgroupDir& d) {
      write_knob("join cgroup", d.path + "/cgroup.procs", std::to_string(pid));
    };
    for (const auto& d : v1_) join(d);
    if (unified_) join(*unified_);
  }

  void update(const oci::Resources& res) override { set(res, /*updating=*/true); }

  void freeze() override { set_frozen(true); }
  void thaw() override { set_frozen(false); }

  bool frozen() const override {
    if (const auto* d = v1_dir("freezer")) {
      return read_file_if_exists(d->path + "/freezer.state").value_or("").find("FROZEN") == 0;
    }
    if (unified_) return v2_events_flag(unified_->path, "frozen", true);
    return false;
  }

  std::vector<pid_t> pids() const override {
    std::vector<pid_t> out;
    const CgroupDir* d = nullptr;
    for (const char* c : {"pids", "freezer", "memory", "devices", "cpu", "name=systemd"})
      if ((d = v1_dir(c))) break;
    if (!d) d = unified_ ? &*unified_ : (v1_.empty() ? nullptr : &v1_.front());
    if (d) collect_pids(d->path, out);
    std::sort(out.begin(), out.end());
    out.erase(std::unique(out.begin(), out.end()), out.end());
    return out;
  }

  void destroy() noexcept override {
    try {
      kill_leftovers();
    } catch (const std::exception& e) {
      log::debug(std::string("cgroup destroy: ") + e.what());
    }
    for (auto& d : v1_) remove_dirs(d);
    if (unified_) remove_dirs(*unified_);
  }

  std::string unified_path() const override { return unified_ ? unified_->path : ""; }

 protected:
  // Writes res into the cgroup(s); devices only at creation or when res names some.
  virtual void set(const oci::Resources& res, bool updating) = 0;
  // Controllers to turn on in the unified hierarchy's ancestors.
  virtual std::vector<std::string> unified_controllers(const oci::Resources&) const { return {}; }

  const CgroupDir* v1_dir(std::string_view controller) const {
    for (const auto& d : v1_)
      if (d.has(controller)) return &d;
    return nullptr;
  }
  // The v1 directory of controller, or an error naming the field that needs it.
  const CgroupDir& need_v1(std::string_view controller, const std::string& fld) const {
    if (const auto* d = v1_dir(controller)) return *d;
    throw Error(fld + ": no " + std::string(controller) + " cgroup hierarchy on this host", ENOENT);
  }
  void need_v1_file(std::string_view controller, const std::string& fld, const char* file) const {
    const auto& d = need_v1(controller, fld);
    if (!path_exists(d.mount + "/" + file))
      throw Error(fld + ": this host has no " + file + " (in " + d.mount + ")", ENOENT);
  }
  bool unified_has(std::string_view controller) const {
    if (!unified_) return false;
    auto have = controllers_of(unified_->mount);
    return std::find(have.begin(), have.end(), controller) != have.end();
  }

  // Checks for the v1 controllers res needs (shared by the v1 and hybrid backends).
  void validate_v1(const oci::Resources& res, bool hugetlb_in_unified) const {
    if (res.memory) {
      const auto& m = *res.memory;
      need_v1("memory", field("memory"));
      if (m.swap && *m.swap != -1 && *m.swap != 0)
        need_v1_file("memory", field("memory.swap"), "memory.memsw.limit_in_bytes");
      if (m.kernel_tcp)
        need_v1_file("memory", field("memory.kernelTCP"), "memory.kmem.tcp.limit_in_bytes");
      if (m.swappiness && *m.swappiness > 100)
        throw Error(
            field("memory.swappiness") + ": " + str(*m.swappiness) + " is out of range (0 to 100)",
            EINVAL);
    }
    if (res.cpu) {
      const auto& c = *res.cpu;
      if (set_nonzero(c.shares) || set_nonzero(c.quota) || set_nonzero(c.period) || c.burst ||
          set_nonzero(c.realtime_period) || set_nonzero(c.realtime_runtime) || c.idle)
        need_v1("cpu", field("cpu"));
      if (set_nonzero(c.realtime_runtime) || set_nonzero(c.realtime_period))
        need_v1_file("cpu", field("cpu.realtimeRuntime"), "cpu.rt_runtime_us");
      if (c.burst) need_v1_file("cpu", field("cpu.burst"), "cpu.cfs_burst_us");
      if (c.idle) need_v1_file("cpu", field("cpu.idle"), "cpu.idle");
      if (!c.cpus.empty() || !c.mems.empty()) need_v1("cpuset", field("cpu.cpus"));
    }
    if (res.pids_limit) need_v1("pids", field("pids"));
    if (res.block_io) {
      const auto& b = *res.block_io;
      need_v1("blkio", field("blockIO"));
      auto throttle = [&](const char* name, const char* file, const auto& v) {
        if (!v.empty()) need_v1_file("blkio", field(std::string("blockIO.") + name), file);
      };
      throttle("throttleReadBpsDevice", "blkio.throttle.read_bps_device", b.throttle_read_bps);
      throttle("throttleWriteBpsDevice", "blkio.throttle.write_bps_device", b.throttle_write_bps);
      throttle("throttleReadIOPSDevice", "blkio.throttle.read_iops_device", b.throttle_read_iops);
      throttle("throttleWriteIOPSDevice", "blkio.throttle.write_iops_device",
               b.throttle_write_iops);
    }
    if (!res.hugepage_limits.empty()) {
      if (!v1_dir("hugetlb") && !hugetlb_in_unified)
        throw Error(field("hugepageLimits") + ": no hugetlb controller on this host", ENOENT);
      check_hugepage_sizes(res);
    }
    if (res.network) {
      if (res.network->class_id) need_v1("net_cls", field("network.classID"));
      if (!res.network->priorities.empty()) need_v1("net_prio", field("network.priorities"));
    }
    if (!res.devices.empty() && !v1_dir("devices") && !unified_)
      throw Error(field("devices") + ": no devices cgroup hierarchy on this host", ENOENT);
  }

  // Writes what v1 hierarchies hold (everything but hugetlb when hugetlb_in_unified).
  void set_v1(const oci::Resources& res, bool updating, bool hugetlb_in_unified) {
    if (res.memory) v1_memory(need_v1("memory", field("memory")), *res.memory, updating);
    if (res.cpu) {
      const auto& c = *res.cpu;
      if (set_nonzero(c.shares) || set_nonzero(c.quota) || set_nonzero(c.period) || c.burst ||
          set_nonzero(c.realtime_period) || set_nonzero(c.realtime_runtime) || c.idle)
        v1_cpu(need_v1("cpu", field("cpu")), c);
      if (!c.cpus.empty() || !c.mems.empty()) v1_cpuset(need_v1("cpuset", field("cpu.cpus")), c);
    }
    if (res.pids_limit)
      write_knob(field("pids.limit"), need_v1("pids", field("pids")).path + "/pids.max",
                 pids_max(*res.pids_limit));
    if (res.block_io) v1_blkio(need_v1("blkio", field("blockIO")), *res.block_io);
    if (!res.hugepage_limits.empty() && !hugetlb_in_unified)
      write_hugetlb(need_v1("hugetlb", field("hugepageLimits")).path, res.hugepage_limits,
                    "limit_in_bytes", "rsvd.limit_in_bytes");
    if (res.network) {
      if (res.network->class_id)
        write_knob(field("network.classID"),
                   need_v1("net_cls", field("network.classID")).path + "/net_cls.classid",
                   str(uint64_t{*res.network->class_id}));
      const auto& prios = res.network->priorities;
      for (size_t i = 0; i < prios.size(); ++i)
        write_knob(field("network.priorities[" + std::to_string(i) + "]"),
                   need_v1("net_prio", field("network.priorities")).path + "/net_prio.ifpriomap",
                   prios[i].name + " " + str(uint64_t{prios[i].priority}));
    }
    if (!updating || !res.devices.empty()) {
      if (const auto* d = v1_dir("devices")) {
        v1_devices(*d, res.devices);
      } else if (unified_) {
        set_v2_devices(res);
      } else if (!res.devices.empty()) {
        throw Error(field("devices") + ": no devices cgroup hierarchy on this host", ENOENT);
      } else {
        log::warn("no devices cgroup on this host: the container's device access is not limited");
      }
    }
  }

  void set_v2_devices(const oci::Resources& res) {
    try {
      attach_device_filter(unified_->path, with_default_devices(res.devices));
    } catch (const Error& e) {
      throw e.with_context(field("devices"));
    }
  }

  CgroupLayout layout_;
  std::vector<CgroupDir> v1_;
  std::optional<CgroupDir> unified_;

 private:
  void set_frozen(bool freeze) {
    if (const auto* d = v1_dir("freezer"))
      v1_freeze(d->path, freeze);
    else if (unified_)
      v2_freeze(unified_->path, freeze);
    else
      throw Error(std::string(freeze ? "freeze" : "thaw") + ": no freezer cgroup on this host",
                  ENOENT);
  }

  // Processes still in a cgroup we created would keep it from being removed.
  void kill_leftovers() {
    auto ours = [](const CgroupDir& d) {
      return !d.created.empty() && d.created.back() == d.path && path_exists(d.path);
    };
    bool any = unified_ && ours(*unified_);
    for (const auto& d : v1_) any = any || ours(d);
    if (!any || pids().empty()) return;
    if (unified_ && ours(*unified_) && path_exists(unified_->path + "/cgroup.kill")) {
      write_raw(unified_->path + "/cgroup.kill", "1");
    } else {
      // Freeze first so nothing forks between listing and killing; SIGKILL lands on thaw.
      const auto* fz = v1_dir("freezer");
      if (fz && ours(*fz)) write_raw(fz->path + "/freezer.state", "FROZEN");
      for (pid_t p : pids()) ::kill(p, SIGKILL);
      if (fz && ours(*fz)) write_raw(fz->path + "/freezer.state", "THAWED");
    }
    try {
      wait_until(
          "wait for cgroup to empty", [&] { return pids().empty(); }, std::chrono::seconds(1));
    } catch (const Error& e) {
      log::debug(e.what());
    }
  }
};

class V1Manager final : public CgroupfsManager {
 public:
  using CgroupfsManager::CgroupfsManager;

  void validate(const oci::Resources& res) const override {
    validate_v1(res, false);
    if (!res.unified.empty())
      throw Error(field("unified") + ": needs cgroup v2, this host has only cgroup v1", ENOTSUP);
  }

 protected:
  void set(const oci::Resources& res, bool updating) override {
    if (!res.unified.empty())
      throw Error(field("unified") + ": needs cgroup v2, this host has only cgroup v1", ENOTSUP);
    set_v1(res, updating, false);
  }
};

// v1 for every v1 controller; the unified hierarchy gets the same cgroup (so a cgroup
// namespace or systemd inside sees it), hugetlb when v1 has none, and linux.resources.unified.
class HybridManager final : public CgroupfsManager {
 public:
  using CgroupfsManager::CgroupfsManager;

  void validate(const oci::Resources& res) const override {
    validate_v1(res, hugetlb_in_unified());
    check_unified_keys(res);
    auto have = controllers_of(unified_->mount);
    for (const auto& [key, value] : res.unified) {
      std::string ctrl = key.substr(0, key.find('.'));
      if (ctrl != "cgroup" && std::find(have.begin(), have.end(), ctrl) == have.end())
        throw Error(field("unified[" + key + "]") + ": controller \"" + ctrl +
                        "\" is not in this host's cgroup v2 hierarchy (" + unified_->mount +
                        "/cgroup.controllers)",
                    ENOENT);
    }
  }

 protected:
  void set(const oci::Resources& res, bool updating) override {
    check_unified_keys(res);
    const bool in_unified = hugetlb_in_unified();
    set_v1(res, updating, in_unified);
    if (in_unified && !res.hugepage_limits.empty())
      write_hugetlb(unified_->path, res.hugepage_limits, "max", "rsvd.max");
    write_unified(*unified_, res.unified);
  }

  std::vector<std::string> unified_controllers(const oci::Resources& res) const override {
    std::vector<std::string> out;
    if (!res.hugepage_limits.empty() && hugetlb_in_unified()) out.push_back("hugetlb");
    for (const auto& [key, value] : res.unified) {
      std::string ctrl = key.substr(0, key.find('.'));
      if (ctrl != "cgroup" && std::find(out.begin(), out.end(), ctrl) == out.end())
        out.push_back(ctrl);
    }
    return out;
  }

 private:
  bool hugetlb_in_unified() const { return !v1_dir("hugetlb") && unified_has("hugetlb"); }
};

class V2Manager final : public CgroupfsManager {
 public:
  using CgroupfsManager::CgroupfsManager;

  void validate(const oci::Resources& res) const override {
    auto have = controllers_of(unified_->mount);
    auto need = [&](const char* ctrl, const std::string& fld) {
      if (std::find(have.begin(), have.end(), ctrl) == have.end())
        throw Error(fld + ": cgroup v2 controller \"" + ctrl + "\" is not available (" +
                        unified_->mount + "/cgroup.controllers)",
                    ENOENT);
    };
    if (res.memory) {
      const auto& m = *res.memory;
      if (m.limit || m.reservation || m.swap) need("memory", field("memory"));
      if (m.swap || (m.limit && *m.limit == -1)) {
        try {
          swap_to_v2(m.swap.value_or(0), m.limit.value_or(0));
        } catch (const Error& e) {
          throw e.with_context(field("memory.swap"));
        }
      }
    }
    if (res.cpu) {
      const auto& c = *res.cpu;
      if (set_nonzero(c.shares) || set_nonzero(c.quota) || set_nonzero(c.period) || c.burst ||
          c.idle)
        need("cpu", field("cpu"));
      if (set_nonzero(c.realtime_period) || set_nonzero(c.realtime_runtime))
        throw Error(
            field("cpu.realtimeRuntime") + ": real-time limits are not supported on cgroup v2",
            ENOTSUP);
      if (!c.cpus.empty() || !c.mems.empty()) need("cpuset", field("cpu.cpus"));
    }
    if (res.pids_limit) need("pids", field("pids"));
    if (res.block_io) {
      const auto& b = *res.block_io;
      if (b.leaf_weight)
        throw Error(field("blockIO.leafWeight") + ": not supported on cgroup v2", ENOTSUP);
      if (b.weight || !b.weight_device.empty() || !b.throttle_read_bps.empty() ||
          !b.throttle_write_bps.empty() || !b.throttle_read_iops.empty() ||
          !b.throttle_write_iops.empty())
        need("io", field("blockIO"));
    }
    if (!res.hugepage_limits.empty()) {
      need("hugetlb", field("hugepageLimits"));
      check_hugepage_sizes(res);
    }
    if (res.network && (res.network->class_id || !res.network->priorities.empty()))
      throw Error(field("network") + ": net_cls/net_prio do not exist on cgroup v2", ENOTSUP);
    check_unified_keys(res);
    for (const auto& [key, value] : res.unified) {
      std::string ctrl = key.substr(0, key.find('.'));
      if (ctrl != "cgroup") need(ctrl.c_str(), field("unified[" + key + "]"));
    }
  }

 protected:
  void set(const oci::Resources& res, bool updating) override {
    check_unified_keys(res);
    const auto& d = *unified_;
    if (res.memory) v2_memory(d, *res.memory, updating);
    if (res.cpu) {
      if (set_nonzero(res.cpu->realtime_period) || set_nonzero(res.cpu->realtime_runtime))
        throw Error(
            field("cpu.realtimeRuntime") + ": real-time limits are not supported on cgroup v2",
            ENOTSUP);
      v2_cpu(d, *res.cpu);
    }
    if (res.pids_limit)
      write_knob(field("pids.limit"), d.path + "/pids.max", pids_max(*res.pids_limit));
    if (res.block_io) {
      if (res.block_io->leaf_weight)
        throw Error(field("blockIO.leafWeight") + ": not supported on cgroup v2", ENOTSUP);
      v2_io(d, *res.block_io);
    }
    if (!res.hugepage_limits.empty()) write_hugetlb(d.path, res.hugepage_limits, "max", "rsvd.max");
    if (res.network && (res.network->class_id || !res.network->priorities.empty()))
      throw Error(field("network") + ": net_cls/net_prio do not exist on cgroup v2", ENOTSUP);
    write_unified(d, res.unified);
    if (!updating || !res.devices.empty()) set_v2_devices(res);
  }

  // Like runc: every controller the root offers, so later `update`s find their files.
  std::vector<std::string> unified_controllers(const oci::Resources&) const override {
    return controllers_of(unified_->mount);
  }
};

std::unique_ptr<CgroupManager> make_manager(CgroupLayout layout, std::vector<CgroupDir> v1,
                                            std::optional<CgroupDir> unified) {
  switch (layout) {
    case CgroupLayout::v1:
      return std::make_unique<V1Manager>(layout, std::move(v1), std::nullopt);
    case CgroupLayout::hybrid:
      if (!unified) throw Error("cgroups: hybrid layout without a unified hierarchy");
      return std::make_unique<HybridManager>(layout, std::move(v1), std::move(unified));
    case CgroupLayout::v2:
      if (!unified) throw Error("cgroups: v2 layout without a unified hierarchy");
      return std::make_unique<V2Manager>(layout, std::vector<CgroupDir>{}, std::move(unified));
  }
  throw Error("cgroups: unknown layout");
}

}  // namespace

CgroupLayout detect_cgroup_layout(const std::string& mount_root) {
  auto is_cgroup2 = [](const std::string& p) {
    struct statfs st;
    return ::statfs(p.c_str(), &st) == 0 && st.f_type == CGROUP2_SUPER_MAGIC;
  };
  if (is_cgroup2(mount_root)) return CgroupLayout::v2;
  if (is_cgroup2(mount_root + "/unified")) return CgroupLayout::hybrid;
  return CgroupLayout::v1;
}

std::vector<oci::DeviceRule> device_rules_for(const std::vector<oci::Device>& devices) {
  std::vector<oci::DeviceRule> out;
  for (const auto& d : devices) {
    if (d.type == 'p') continue;
    out.push_back(oci::DeviceRule{.allow = true,
                                  .type = d.type == 'b' ? 'b' : 'c',
                                  .major = d.major,
                                  .minor = d.minor,
                                  .access = "rwm"});
  }
  return out;
}

std::unique_ptr<CgroupManager> CgroupManager::create(const std::string& cgroups_path,
                                                     const std::string& container_id) {
  const std::string root = "/sys/fs/cgroup";
  CgroupLayout layout = detect_cgroup_layout(root);
  auto mounts = parse_cgroup_mounts(read_file("/proc/self/mountinfo"), root);
  auto own = parse_proc_cgroup(read_file("/proc/self/cgroup"));
  auto dirs =
      resolve_cgroup_dirs(layout, mounts, own, inner_path(cgroups_path, container_id), root);
  return make_manager(layout, std::move(dirs.v1), std::move(dirs.unified));
}

std::unique_ptr<CgroupManager> CgroupManager::load(const nlohmann::json& saved) {
  if (!saved.is_object() || !saved.contains("layout") || !saved["layout"].is_string())
    throw Error("cgroup state: missing \"layout\"");
  std::string name = saved["layout"].get<std::string>();
  CgroupLayout layout;
  if (name == "v1")
    layout = CgroupLayout::v1;
  else if (name == "v2")
    layout = CgroupLayout::v2;
  else if (name == "hybrid")
    layout = CgroupLayout::hybrid;
  else
    throw Error("cgroup state: unknown layout \"" + name + "\"");
  std::vector<CgroupDir> v1;
  if (saved.contains("hierarchies") && saved["hierarchies"].is_array())
    for (const auto& h : saved["hierarchies"]) v1.push_back(dir_from_json(h));
  std::optional<CgroupDir> unified;
  if (saved.contains("unified") && saved["unified"].is_object())
    unified = dir_from_json(saved["unified"]);
  return make_manager(layout, std::move(v1), std::move(unified));
}

}  // namespace racker::runtime
