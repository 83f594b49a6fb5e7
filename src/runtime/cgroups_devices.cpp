// Device access for the container's cgroup: rule lines for v1's devices.allow/devices.deny,
// the rules every container gets, and for cgroup v2 (which has no devices files) the same rules
// compiled into an eBPF program attached to the cgroup directory.
#include "runtime/cgroups_internal.hpp"

#include <fcntl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "base/error.hpp"
#include "base/fd.hpp"
#include "base/log.hpp"
#include "base/strings.hpp"
#include "runtime/cgroups_writers.hpp"

namespace racker::runtime::cgroups_internal {

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

std::vector<oci::DeviceRule> with_default_devices(const std::vector<oci::DeviceRule>& rules) {
  std::vector<oci::DeviceRule> all = rules;
  const auto& defs = default_device_rules();
  all.insert(all.end(), defs.begin(), defs.end());
  return all;
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

// --- eBPF device filter ---------------------------------------------------------------------

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
  // The verifier gives up with EAGAIN when a signal arrives meanwhile (racker's handlers for
  // SIGINT/SIGTERM during a boot): the handler has run by the time we are back, so load again.
  long fd;
  for (int tries = 1;; ++tries) {
    fd = bpf(BPF_PROG_LOAD, &attr);
    if (fd >= 0) return UniqueFd(static_cast<int>(fd));
    if ((errno != EAGAIN && errno != EINTR) || tries == 5) break;
  }
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

}  // namespace racker::runtime::cgroups_internal
