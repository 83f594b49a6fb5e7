#include "runtime/seccomp.hpp"

#include <fcntl.h>
#include <linux/seccomp.h>
#include <seccomp.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <optional>
#include <string_view>

#include "base/error.hpp"
#include "base/fd.hpp"
#include "base/fs.hpp"
#include "runtime/idmap.hpp"

namespace racker::runtime {

namespace {

constexpr std::string_view kField = "config.json: linux.seccomp";

[[noreturn]] void fail(const std::string& field, const std::string& problem) {
  throw Error(std::string(kField) + field + ": " + problem, EINVAL);
}

std::string quoted(const std::string& s) {
  return "\"" + s + "\"";
}

struct Named {
  std::string_view name;
  uint32_t value;
};

// The architecture names of the runtime spec. Newer ones only when this libseccomp knows them.
constexpr Named kArchitectures[] = {
    {"SCMP_ARCH_X86", SCMP_ARCH_X86},
    {"SCMP_ARCH_X86_64", SCMP_ARCH_X86_64},
    {"SCMP_ARCH_X32", SCMP_ARCH_X32},
    {"SCMP_ARCH_ARM", SCMP_ARCH_ARM},
    {"SCMP_ARCH_AARCH64", SCMP_ARCH_AARCH64},
    {"SCMP_ARCH_MIPS", SCMP_ARCH_MIPS},
    {"SCMP_ARCH_MIPS64", SCMP_ARCH_MIPS64},
    {"SCMP_ARCH_MIPS64N32", SCMP_ARCH_MIPS64N32},
    {"SCMP_ARCH_MIPSEL", SCMP_ARCH_MIPSEL},
    {"SCMP_ARCH_MIPSEL64", SCMP_ARCH_MIPSEL64},
    {"SCMP_ARCH_MIPSEL64N32", SCMP_ARCH_MIPSEL64N32},
    {"SCMP_ARCH_PPC", SCMP_ARCH_PPC},
    {"SCMP_ARCH_PPC64", SCMP_ARCH_PPC64},
    {"SCMP_ARCH_PPC64LE", SCMP_ARCH_PPC64LE},
    {"SCMP_ARCH_S390", SCMP_ARCH_S390},
    {"SCMP_ARCH_S390X", SCMP_ARCH_S390X},
    {"SCMP_ARCH_PARISC", SCMP_ARCH_PARISC},
    {"SCMP_ARCH_PARISC64", SCMP_ARCH_PARISC64},
    {"SCMP_ARCH_RISCV64", SCMP_ARCH_RISCV64},
#ifdef SCMP_ARCH_LOONGARCH64
    {"SCMP_ARCH_LOONGARCH64", SCMP_ARCH_LOONGARCH64},
#endif
#ifdef SCMP_ARCH_M68K
    {"SCMP_ARCH_M68K", SCMP_ARCH_M68K},
#endif
#ifdef SCMP_ARCH_SH
    {"SCMP_ARCH_SH", SCMP_ARCH_SH},
#endif
#ifdef SCMP_ARCH_SHEB
    {"SCMP_ARCH_SHEB", SCMP_ARCH_SHEB},
#endif
};

constexpr Named kOperators[] = {
    {"SCMP_CMP_NE", SCMP_CMP_NE},
    {"SCMP_CMP_LT", SCMP_CMP_LT},
    {"SCMP_CMP_LE", SCMP_CMP_LE},
    {"SCMP_CMP_EQ", SCMP_CMP_EQ},
    {"SCMP_CMP_GE", SCMP_CMP_GE},
    {"SCMP_CMP_GT", SCMP_CMP_GT},
    {"SCMP_CMP_MASKED_EQ", SCMP_CMP_MASKED_EQ},
};

constexpr Named kFlags[] = {
    {"SECCOMP_FILTER_FLAG_TSYNC", SECCOMP_FILTER_FLAG_TSYNC},
    {"SECCOMP_FILTER_FLAG_LOG", SECCOMP_FILTER_FLAG_LOG},
    {"SECCOMP_FILTER_FLAG_SPEC_ALLOW", SECCOMP_FILTER_FLAG_SPEC_ALLOW},
#ifdef SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV
    {"SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV", SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV},
#endif
};

template <size_t N>
std::optional<uint32_t> lookup(const Named (&table)[N], const std::string& name) {
  for (const auto& entry : table) {
    if (entry.name == name) return entry.value;
  }
  return std::nullopt;
}

// Maps an action name (and errnoRet where it has a meaning) to its SCMP_ACT_* value.
// `field` is the JSON path of the action, `errno_field` that of its errnoRet.
uint32_t parse_action(const std::string& name, std::optional<uint32_t> errno_ret,
                      const std::string& field, const std::string& errno_field) {
  // Only ERRNO and TRACE carry data; like crun, errnoRet elsewhere is ignored.
  auto data = [&]() -> uint32_t {
    uint32_t value = errno_ret.value_or(EPERM);
    // The kernel keeps 16 bits; silently truncating would return some other errno.
    if (value > 0xffff) fail(errno_field, std::to_string(value) + " does not fit in 16 bits");
    return value;
  };
  if (name == "SCMP_ACT_KILL" || name == "SCMP_ACT_KILL_THREAD") return SCMP_ACT_KILL_THREAD;
  if (name == "SCMP_ACT_KILL_PROCESS") return SCMP_ACT_KILL_PROCESS;
  if (name == "SCMP_ACT_TRAP") return SCMP_ACT_TRAP;
  if (name == "SCMP_ACT_ERRNO") return SCMP_ACT_ERRNO(data());
  if (name == "SCMP_ACT_TRACE") return SCMP_ACT_TRACE(data());  // EPERM by default, as runc
  if (name == "SCMP_ACT_ALLOW") return SCMP_ACT_ALLOW;
  if (name == "SCMP_ACT_LOG") return SCMP_ACT_LOG;
  if (name == "SCMP_ACT_NOTIFY") return SCMP_ACT_NOTIFY;
  fail(field, "unknown action " + quoted(name));
}

struct FilterDeleter {
  void operator()(void* ctx) const { seccomp_release(ctx); }
};
using Filter = std::unique_ptr<void, FilterDeleter>;

// Exports the filter as classic BPF through a memfd: libseccomp 2.5 can only write to an fd.
std::vector<sock_filter> export_bpf(const Filter& filter) {
  UniqueFd fd(memfd_create("racker-seccomp", MFD_CLOEXEC));
  if (!fd) throw_errno("seccomp: memfd_create");
  if (int rc = seccomp_export_bpf(filter.get(), fd.get()); rc < 0)
    throw_errno("seccomp: export bpf", -rc);
  struct stat st {};
  if (fstat(fd.get(), &st) < 0) throw_errno("seccomp: stat exported bpf");
  size_t size = static_cast<size_t>(st.st_size);
  if (size == 0 || size % sizeof(sock_filter) != 0)
    throw Error("seccomp: exported bpf has odd size " + std::to_string(size), EINVAL);
  std::vector<sock_filter> bpf(size / sizeof(sock_filter));
  ssize_t n = pread(fd.get(), bpf.data(), size, 0);
  if (n < 0) throw_errno("seccomp: read exported bpf");
  if (static_cast<size_t>(n) != size) throw Error("seccomp: short read of exported bpf", EIO);
  return bpf;
}

// --- the cache of compiled filters ---------------------------------------------------------
// libseccomp takes tens of milliseconds to compile a docker-sized profile for three
// architectures, more than the rest of a container's start; every run of one image with one
// profile compiles the same filter. So compiled programs are kept under kSeccompCacheDir, one
// file per filter: its name a hash of the input, its content the input itself (compared in
// full on a hit, so a hash collision can only cost a compile) and the program. Only a
// directory that this user owns and nobody else may write is trusted.

constexpr char kCacheMagic[8] = {'r', 'k', 's', 'c', 'c', 'm', 'p', '1'};

// Everything the compiled program depends on, as text (length-prefixed fields, so no two
// inputs give one key).
std::string cache_key(const oci::Seccomp& s) {
  std::string key;
  auto add = [&](std::string_view v) {
    key += std::to_string(v.size());
    key += ':';
    key += v;
  };
  auto add_number = [&](uint64_t n) { add(std::to_string(n)); };
  const scmp_version* v = seccomp_version();
  add_number(v->major);
  add_number(v->minor);
  add_number(v->micro);
  add(s.default_action);
  add_number(s.default_errno_ret ? *s.default_errno_ret + 1ULL : 0);
  add_number(s.architectures.size());
  for (auto& a : s.architectures) add(a);
  add_number(s.flags.size());
  for (auto& f : s.flags) add(f);
  add(s.listener_path);
  add_number(s.syscalls.size());
  for (auto& c : s.syscalls) {
    add_number(c.names.size());
    for (auto& n : c.names) add(n);
    add(c.action);
    add_number(c.errno_ret ? *c.errno_ret + 1ULL : 0);
    add_number(c.args.size());
    for (auto& a : c.args) {
      add_number(a.index);
      add_number(a.value);
      add_number(a.value_two);
      add(a.op);
    }
  }
  return key;
}

}  // namespace

std::string seccomp_cache_dir() {
  if (host_root()) return kSeccompCacheDir;
  const char* xdg = std::getenv("XDG_RUNTIME_DIR");
  if (!xdg || *xdg != '/') return "";
  return std::string(xdg) + "/racker-seccomp";
}

namespace {

std::string cache_file(const std::string& key) {
  uint64_t h = 14695981039346656037ULL;  // FNV-1a
  for (unsigned char c : key) h = (h ^ c) * 1099511628211ULL;
  char name[32];
  std::snprintf(name, sizeof name, "%016llx.bpf", static_cast<unsigned long long>(h));
  return seccomp_cache_dir() + "/" + name;
}

bool trusted_cache_dir(bool create) {
  std::string dir = seccomp_cache_dir();
  if (dir.empty()) return false;
  if (create) ::mkdir(dir.c_str(), 0700);
  struct stat st {};
  return ::lstat(dir.c_str(), &st) == 0 && S_ISDIR(st.st_mode) && st.st_uid == ::geteuid() &&
         (st.st_mode & 022) == 0;
}

template <typename T>
bool take(std::string_view& in, T& out) {
  if (in.size() < sizeof(T)) return false;
  std::memcpy(&out, in.data(), sizeof(T));
  in.remove_prefix(sizeof(T));
  return true;
}

std::optional<SeccompProgram> cache_lookup(const std::string& key) {
  if (!trusted_cache_dir(false)) return std::nullopt;
  UniqueFd fd(::open(cache_file(key).c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
  struct stat st {};
  if (!fd || ::fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode) || st.st_uid != ::geteuid() ||
      (st.st_mode & 022) != 0 || st.st_size > (1 << 22))
    return std::nullopt;
  std::string data(static_cast<size_t>(st.st_size), '\0');
  if (::pread(fd.get(), data.data(), data.size(), 0) != st.st_size) return std::nullopt;
  std::string_view in = data;
  char magic[8];
  uint32_t key_size = 0, flags = 0, count = 0;
  uint8_t listener = 0;
  if (!take(in, magic) || std::memcmp(magic, kCacheMagic, 8) != 0 || !take(in, key_size) ||
      in.size() < key_size || in.substr(0, key_size) != key)
    return std::nullopt;
  in.remove_prefix(key_size);
  if (!take(in, flags) || !take(in, listener) || !take(in, count) || count == 0 ||
      count > BPF_MAXINSNS || in.size() != count * sizeof(sock_filter))
    return std::nullopt;
  SeccompProgram program;
  program.flags = flags;
  program.wants_listener = listener != 0;
  program.bpf.resize(count);
  std::memcpy(program.bpf.data(), in.data(), in.size());
  return program;
}

// Best effort: a cache that cannot be written costs the next run a compile, nothing more.
void cache_store(const std::string& key, const SeccompProgram& program) {
  if (!trusted_cache_dir(true)) return;
  std::string data(kCacheMagic, sizeof kCacheMagic);
  auto put = [&](const auto& v) { data.append(reinterpret_cast<const char*>(&v), sizeof v); };
  put(static_cast<uint32_t>(key.size()));
  data += key;
  put(static_cast<uint32_t>(program.flags));
  put(static_cast<uint8_t>(program.wants_listener));
  put(static_cast<uint32_t>(program.bpf.size()));
  data.append(reinterpret_cast<const char*>(program.bpf.data()),
              program.bpf.size() * sizeof(sock_filter));
  try {
    write_file_atomic(cache_file(key), data, 0600);
  } catch (const Error&) {
  }
}

SeccompProgram compile_uncached(const oci::Seccomp& seccomp);

}  // namespace

SeccompProgram compile_seccomp(const oci::Seccomp& seccomp) {
  std::string key = cache_key(seccomp);
  std::optional<SeccompProgram> program = cache_lookup(key);
  if (!program) {
    program = compile_uncached(seccomp);
    cache_store(key, *program);
  }
  program->listener_path = seccomp.listener_path;
  program->listener_metadata = seccomp.listener_metadata;
  return std::move(*program);
}

namespace {

SeccompProgram compile_uncached(const oci::Seccomp& seccomp) {
  SeccompProgram program;

  if (seccomp.default_action == "SCMP_ACT_NOTIFY")
    fail(".defaultAction",
         "SCMP_ACT_NOTIFY cannot be the default action (the runtime itself would block)");
  uint32_t default_action = parse_action(seccomp.default_action, seccomp.default_errno_ret,
                                         ".defaultAction", ".defaultErrnoRet");

  for (size_t i = 0; i < seccomp.flags.size(); ++i) {
    auto flag = lookup(kFlags, seccomp.flags[i]);
    if (!flag)
      fail(".flags[" + std::to_string(i) + "]", "unknown flag " + quoted(seccomp.flags[i]));
    program.flags |= *flag;
  }

  Filter filter(seccomp_init(default_action));
  if (!filter) throw Error("seccomp: cannot initialise filter", ENOMEM);
  // The runtime sets no_new_privs itself, when process.noNewPrivileges asks for it.
  if (int rc = seccomp_attr_set(filter.get(), SCMP_FLTATR_CTL_NNP, 0); rc < 0)
    throw_errno("seccomp: clear no_new_privs attribute", -rc);
  // A binary tree of syscall numbers rather than a list: a docker-sized profile is then a few
  // dozen instructions per syscall, not hundreds, and the kernel's attach (which runs the
  // filter for every syscall number to build its action cache) takes a fraction of the time.
  if (int rc = seccomp_attr_set(filter.get(), SCMP_FLTATR_CTL_OPTIMIZE, 2); rc < 0)
    throw_errno("seccomp: ask for a binary tree", -rc);

  for (size_t i = 0; i < seccomp.architectures.size(); ++i) {
    const std::string& name = seccomp.architectures[i];
    auto arch = lookup(kArchitectures, name);
    std::string field = ".architectures[" + std::to_string(i) + "]";
    if (!arch) fail(field, "unknown architecture " + quoted(name));
    int rc = seccomp_arch_add(filter.get(), *arch);
    // EEXIST: the native architecture is always present. EDOM: the byte order differs from
    // the native one; no such process can run on this kernel, and were one to appear the
    // filter's bad-architecture action (kill) would stop it, so profiles that list every
    // architecture stay portable.
    if (rc < 0 && rc != -EEXIST && rc != -EDOM)
      throw Error(std::string(kField) + field + ": add " + name + ": " + std::strerror(-rc), -rc);
  }

  for (size_t i = 0; i < seccomp.syscalls.size(); ++i) {
    const oci::SeccompSyscall& rule = seccomp.syscalls[i];
    std::string field = ".syscalls[" + std::to_string(i) + "]";
    uint32_t action =
        parse_action(rule.action, rule.errno_ret, field + ".action", field + ".errnoRet");

    if (action == SCMP_ACT_NOTIFY) {
      if (seccomp.listener_path.empty())
        fail(field + ".action", "SCMP_ACT_NOTIFY requires linux.seccomp.listenerPath");
      for (size_t n = 0; n < rule.names.size(); ++n) {
        // The init may still write (to its sync socket) between loading the filter and
        // exec, before any agent holds the fd: a notified write could hang it for good.
        // runc and youki refuse it too.
        if (rule.names[n] == "write")
          fail(field + ".names[" + std::to_string(n) + "]",
               "SCMP_ACT_NOTIFY cannot be used for \"write\"");
      }
      program.wants_listener = true;
    }

    std::vector<scmp_arg_cmp> conditions;
    std::array<unsigned, 6> per_index{};
    for (size_t a = 0; a < rule.args.size(); ++a) {
      const oci::SeccompArg& arg = rule.args[a];
      std::string arg_field = field + ".args[" + std::to_string(a) + "]";
      auto op = lookup(kOperators, arg.op);
      if (!op) fail(arg_field + ".op", "unknown operator " + quoted(arg.op));
      if (arg.index >= per_index.size())
        fail(arg_field + ".index", "must be 0..5, got " + std::to_string(arg.index));
      ++per_index[arg.index];
      conditions.push_back({.arg = arg.index,
                            .op = static_cast<scmp_compare>(*op),
                            .datum_a = arg.value,
                            .datum_b = arg.value_two});
    }
    // libseccomp refuses two comparisons of one argument in a rule; like runc, such a rule
    // becomes one rule per comparison (so the comparisons are OR-ed, not AND-ed).
    bool split = false;
    for (unsigned count : per_index) split = split || count > 1;

    // libseccomp refuses rules that repeat the default action; they change nothing anyway.
    if (action == default_action) continue;

    for (const std::string& name : rule.names) {
      // Like runc and crun: skip names libseccomp cannot resolve for the native arch;
      // profiles list syscalls of newer kernels and other architectures on purpose.
      int nr = seccomp_syscall_resolve_name(name.c_str());
      if (nr == __NR_SCMP_ERROR) continue;
      auto add = [&](unsigned count, const scmp_arg_cmp* cmp) {
        int rc = seccomp_rule_add_array(filter.get(), action, nr, count, cmp);
        if (rc < 0)
          throw Error(std::string(kField) + field + ": add rule for " + quoted(name) + ": " +
                          std::strerror(-rc),
                      -rc);
      };
      if (!split) {
        add(static_cast<unsigned>(conditions.size()), conditions.data());
      } else {
        for (const scmp_arg_cmp& cmp : conditions) add(1, &cmp);
      }
    }
  }

  program.bpf = export_bpf(filter);
  if (program.bpf.size() > BPF_MAXINSNS)
    throw Error(std::string(kField) + ": filter has " + std::to_string(program.bpf.size()) +
                    " instructions, more than the kernel's limit of " +
                    std::to_string(BPF_MAXINSNS),
                E2BIG);
  return program;
}

}  // namespace

int install_seccomp(const SeccompProgram& program) {
  if (program.bpf.empty() || program.bpf.size() > BPF_MAXINSNS) return -EINVAL;
  sock_fprog prog{
      .len = static_cast<unsigned short>(program.bpf.size()),
      .filter = const_cast<sock_filter*>(program.bpf.data()),
  };
  unsigned long flags = program.flags;
  if (program.wants_listener) {
    flags |= SECCOMP_FILTER_FLAG_NEW_LISTENER;
    // TSYNC and NEW_LISTENER both want the return value; TSYNC_ESRCH (5.7) lets them
    // coexist by reporting a failed thread sync as ESRCH.
    if (flags & SECCOMP_FILTER_FLAG_TSYNC) flags |= SECCOMP_FILTER_FLAG_TSYNC_ESRCH;
  }
  long rc = syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, flags, &prog);
  if (rc < 0 && errno == ENOSYS && flags == 0) {
    // Kernels before 3.17 only have the prctl, which takes no flags.
    rc = prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog, 0, 0);
  }
  // A flag the kernel does not know comes back as EINVAL: report it rather than load a
  // filter that behaves differently from the one asked for.
  if (rc < 0) return -errno;
  return program.wants_listener ? static_cast<int>(rc) : 0;
}

void send_seccomp_listener(int listener_fd, const std::string& path,
                           const std::string& state_json) {
  std::string what = "seccomp listener " + path;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof(addr.sun_path))
    throw Error(what + ": socket path must be 1.." + std::to_string(sizeof(addr.sun_path) - 1) +
                    " bytes long",
                ENAMETOOLONG);
  std::memcpy(addr.sun_path, path.data(), path.size());
  // SCM_RIGHTS needs at least one byte of data to ride on over a stream socket.
  if (state_json.empty()) throw Error(what + ": empty state", EINVAL);

  UniqueFd sock(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!sock) throw_errno(what + ": socket");
  int rc;
  do {
    rc = connect(sock.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof(addr));
  } while (rc < 0 && errno == EINTR);
  if (rc < 0) throw_errno(what + ": connect");

  // The fd travels with the first bytes of the state; the rest, if the socket takes it in
  // pieces, follows as plain data.
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
  iovec iov{.iov_base = const_cast<char*>(state_json.data()), .iov_len = state_json.size()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof(control);
  cmsghdr* cmsg = CMSG_FIRSTHDR(&msg);
  cmsg->cmsg_level = SOL_SOCKET;
  cmsg->cmsg_type = SCM_RIGHTS;
  cmsg->cmsg_len = CMSG_LEN(sizeof(int));
  std::memcpy(CMSG_DATA(cmsg), &listener_fd, sizeof(int));

  ssize_t sent;
  do {
    sent = sendmsg(sock.get(), &msg, MSG_NOSIGNAL);
  } while (sent < 0 && errno == EINTR);
  if (sent < 0) throw_errno(what + ": send listener fd");
  size_t done = static_cast<size_t>(sent);
  while (done < state_json.size()) {
    ssize_t n = send(sock.get(), state_json.data() + done, state_json.size() - done, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw_errno(what + ": send state");
    done += static_cast<size_t>(n);
  }
}

}  // namespace racker::runtime
