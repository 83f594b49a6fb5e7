#include "engine/seccomp_profile.hpp"

#include <sys/utsname.h>

#include <algorithm>
#include <cerrno>
#include <limits>

#include "base/error.hpp"
#include "base/fs.hpp"
#include "base/strings.hpp"
#include "oci/capabilities.hpp"
#include "oci/spec.hpp"
#include "runtime/seccomp.hpp"

namespace racker::engine {

// generated from data/seccomp/*.json (embed_seccomp.cmake)
extern const char* const kDefaultSeccompProfile;
extern const char* const kOsInitSeccompProfile;

using nlohmann::json;

namespace {

constexpr std::string_view kActions[] = {
    "SCMP_ACT_KILL",  "SCMP_ACT_KILL_THREAD", "SCMP_ACT_KILL_PROCESS",
    "SCMP_ACT_TRAP",  "SCMP_ACT_ERRNO",       "SCMP_ACT_TRACE",
    "SCMP_ACT_ALLOW", "SCMP_ACT_LOG",         "SCMP_ACT_NOTIFY"};
constexpr std::string_view kOperators[] = {"SCMP_CMP_NE",       "SCMP_CMP_LT", "SCMP_CMP_LE",
                                           "SCMP_CMP_EQ",       "SCMP_CMP_GE", "SCMP_CMP_GT",
                                           "SCMP_CMP_MASKED_EQ"};
constexpr std::string_view kArchitectures[] = {
    "SCMP_ARCH_X86",     "SCMP_ARCH_X86_64",   "SCMP_ARCH_X32",         "SCMP_ARCH_ARM",
    "SCMP_ARCH_AARCH64", "SCMP_ARCH_MIPS",     "SCMP_ARCH_MIPS64",      "SCMP_ARCH_MIPS64N32",
    "SCMP_ARCH_MIPSEL",  "SCMP_ARCH_MIPSEL64", "SCMP_ARCH_MIPSEL64N32", "SCMP_ARCH_PPC",
    "SCMP_ARCH_PPC64",   "SCMP_ARCH_PPC64LE",  "SCMP_ARCH_S390",        "SCMP_ARCH_S390X",
    "SCMP_ARCH_PARISC",  "SCMP_ARCH_PARISC64", "SCMP_ARCH_RISCV64",     "SCMP_ARCH_LOONGARCH64",
    "SCMP_ARCH_M68K",    "SCMP_ARCH_SH",       "SCMP_ARCH_SHEB"};
// includes/excludes name architectures as Go and libseccomp's arch names do
constexpr std::string_view kNativeArches[] = {
    "x86",      "amd64",     "x32",     "arm",        "arm64",       "mips",
    "mips64",   "mips64n32", "mipsel",  "mipsel64",   "mipsel64n32", "mips3l64n32",
    "ppc",      "ppc64",     "ppc64le", "s390",       "s390x",       "parisc",
    "parisc64", "riscv64",   "loong64", "loongarch64"};
constexpr std::string_view kFlags[] = {"SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_LOG",
                                       "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
                                       "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"};

template <size_t N>
bool known(const std::string_view (&table)[N], const std::string& s) {
  return std::find(std::begin(table), std::end(table), s) != std::end(table);
}

// This machine as includes/excludes name it, and as archMap names it.
#if defined(__x86_64__) && defined(__ILP32__)
constexpr std::string_view kNative = "x32";
constexpr std::string_view kNativeScmp = "SCMP_ARCH_X32";
#elif defined(__x86_64__)
constexpr std::string_view kNative = "amd64";
constexpr std::string_view kNativeScmp = "SCMP_ARCH_X86_64";
#elif defined(__i386__)
constexpr std::string_view kNative = "x86";
constexpr std::string_view kNativeScmp = "SCMP_ARCH_X86";
#elif defined(__aarch64__)
constexpr std::string_view kNative = "arm64";
constexpr std::string_view kNativeScmp = "SCMP_ARCH_AARCH64";
#elif defined(__arm__)
constexpr std::string_view kNative = "arm";
constexpr std::string_view kNativeScmp = "SCMP_ARCH_ARM";
#elif defined(__powerpc64__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
constexpr std::string_view kNative = "ppc64le";
constexpr std::string_view kNativeScmp = "SCMP_ARCH_PPC64LE";
#elif defined(__s390x__)
constexpr std::string_view kNative = "s390x";
constexpr std::string_view kNativeScmp = "SCMP_ARCH_S390X";
#elif defined(__riscv) && __riscv_xlen == 64
constexpr std::string_view kNative = "riscv64";
constexpr std::string_view kNativeScmp = "SCMP_ARCH_RISCV64";
#elif defined(__loongarch64)
constexpr std::string_view kNative = "loong64";
constexpr std::string_view kNativeScmp = "SCMP_ARCH_LOONGARCH64";
#else
constexpr std::string_view kNative = "unknown";
constexpr std::string_view kNativeScmp = "";
#endif

bool is_native(const std::string& arch) {
  return arch == kNative || (kNative == "loong64" && arch == "loongarch64");
}

// "MAJOR.MINOR" (a patch level or suffix is ignored) -> {major, minor}
std::optional<std::pair<int, int>> kernel_version(std::string_view s) {
  auto number = [&](size_t& at) -> std::optional<int> {
    size_t start = at;
    int v = 0;
    while (at < s.size() && s[at] >= '0' && s[at] <= '9' && at - start < 6)
      v = v * 10 + (s[at++] - '0');
    if (at == start) return std::nullopt;
    return v;
  };
  size_t at = 0;
  auto major = number(at);
  if (!major || at >= s.size() || s[at] != '.') return std::nullopt;
  ++at;
  auto minor = number(at);
  if (!minor) return std::nullopt;
  return std::pair{*major, *minor};
}

bool kernel_at_least(const std::string& min) {
  static const std::optional<std::pair<int, int>> running = [] {
    struct utsname u {};
    if (::uname(&u) != 0) return std::optional<std::pair<int, int>>{};
    return kernel_version(u.release);
  }();
  auto want = kernel_version(min);
  return running && want && *running >= *want;
}

const char* type_name(const json& j) {
  switch (j.type()) {
    case json::value_t::null:
      return "null";
    case json::value_t::object:
      return "an object";
    case json::value_t::array:
      return "an array";
    case json::value_t::string:
      return "a string";
    case json::value_t::boolean:
      return "a boolean";
    case json::value_t::number_integer:
    case json::value_t::number_unsigned:
      return "an integer";
    case json::value_t::number_float:
      return "a number";
    default:
      return "a value";
  }
}

// Reads one profile; every error names the source and the field's path.
class Reader {
 public:
  explicit Reader(std::string source) : source_(std::move(source)) {}

  [[noreturn]] void fail(const std::string& where, const std::string& what) const {
    throw Error("seccomp profile " + source_ + ": " + (where.empty() ? "" : where + ": ") + what,
                EINVAL, ErrorKind::invalid);
  }

  void expect_object(const json& j, const std::string& where) const {
    if (!j.is_object())
      fail(where.empty() ? "(top level)" : where,
           std::string("expected an object, got ") + type_name(j));
  }

  static const json* get(const json& obj, const char* key) {
    auto it = obj.find(key);
    if (it == obj.end() || it->is_null()) return nullptr;
    return &*it;
  }

  std::optional<std::string> str(const json& obj, const char* key, const std::string& where) const {
    const json* v = get(obj, key);
    if (!v) return std::nullopt;
    if (!v->is_string())
      fail(at(where, key), std::string("expected a string, got ") + type_name(*v));
    return v->get<std::string>();
  }

  std::optional<uint64_t> uint(const json& obj, const char* key, const std::string& where,
                               uint64_t max) const {
    const json* v = get(obj, key);
    if (!v) return std::nullopt;
    if (v->is_number_integer() && !v->is_number_unsigned() && v->get<int64_t>() < 0)
      fail(at(where, key),
           "expected a non-negative integer, got " + std::to_string(v->get<int64_t>()));
    if (!v->is_number_unsigned() && !v->is_number_integer())
      fail(at(where, key), std::string("expected an integer, got ") + type_name(*v));
    uint64_t n = v->get<uint64_t>();
    if (n > max)
      fail(at(where, key),
           "value " + std::to_string(n) + " out of range (at most " + std::to_string(max) + ")");
    return n;
  }

  std::vector<std::string> strings(const json& obj, const char* key,
                                   const std::string& where) const {
    std::vector<std::string> out;
    const json* v = get(obj, key);
    if (!v) return out;
    if (!v->is_array())
      fail(at(where, key), std::string("expected an array of strings, got ") + type_name(*v));
    for (size_t i = 0; i < v->size(); ++i) {
      const json& e = (*v)[i];
      std::string w = at(where, key) + "[" + std::to_string(i) + "]";
      if (!e.is_string()) fail(w, std::string("expected a string, got ") + type_name(e));
      out.push_back(e.get<std::string>());
    }
    return out;
  }

  const json* array(const json& obj, const char* key, const std::string& where) const {
    const json* v = get(obj, key);
    if (v && !v->is_array())
      fail(at(where, key), std::string("expected an array, got ") + type_name(*v));
    return v;
  }

  static std::string at(const std::string& where, const char* key) {
    return where.empty() ? key : where + "." + key;
  }

  std::string action(const json& obj, const std::string& where, const char* key) const {
    auto a = str(obj, key, where);
    if (!a) fail(at(where, key), "required");
    if (!known(kActions, *a)) fail(at(where, key), "unknown action \"" + *a + "\"");
    return *a;
  }

  SeccompFilter filter(const json& obj, const char* key, const std::string& where) const {
    SeccompFilter f;
    const json* v = get(obj, key);
    if (!v) return f;
    std::string w = at(where, key);
    expect_object(*v, w);
    f.arches = strings(*v, "arches", w);
    for (size_t i = 0; i < f.arches.size(); ++i)
      if (!known(kNativeArches, f.arches[i]))
        fail(w + ".arches[" + std::to_string(i) + "]",
             "unknown architecture \"" + f.arches[i] + "\"");
    f.caps = strings(*v, "caps", w);
    for (size_t i = 0; i < f.caps.size(); ++i)
      if (!oci::capability_from_name(f.caps[i]))
        fail(w + ".caps[" + std::to_string(i) + "]", "unknown capability \"" + f.caps[i] + "\"");
    f.min_kernel = str(*v, "minKernel", w).value_or("");
    if (!f.min_kernel.empty() && !kernel_version(f.min_kernel))
      fail(w + ".minKernel", "expected \"MAJOR.MINOR\", got \"" + f.min_kernel + "\"");
    return f;
  }

  SeccompProfile profile(const json& j) const {
    expect_object(j, "");
    SeccompProfile p;
    p.default_action = action(j, "", "defaultAction");
    if (p.default_action == "SCMP_ACT_NOTIFY")
      fail("defaultAction", "SCMP_ACT_NOTIFY cannot be the default action");
    if (auto e = uint(j, "defaultErrnoRet", "", 0xffff))
      p.default_errno_ret = static_cast<uint32_t>(*e);
    p.architectures = strings(j, "architectures", "");
    for (size_t i = 0; i < p.architectures.size(); ++i)
      if (!known(kArchitectures, p.architectures[i]))
        fail("architectures[" + std::to_string(i) + "]",
             "unknown architecture \"" + p.architectures[i] + "\"");
    if (const json* maps = array(j, "archMap", "")) {
      if (!p.architectures.empty() && !maps->empty())
        fail("archMap", "use either architectures or archMap, not both");
      for (size_t i = 0; i < maps->size(); ++i) {
        std::string w = "archMap[" + std::to_string(i) + "]";
        const json& m = (*maps)[i];
        expect_object(m, w);
        SeccompArchMap am;
        am.arch = str(m, "architecture", w).value_or("");
        if (am.arch.empty()) fail(w + ".architecture", "required");
        if (!known(kArchitectures, am.arch))
          fail(w + ".architecture", "unknown architecture \"" + am.arch + "\"");
        am.sub_arches = strings(m, "subArchitectures", w);
        for (size_t k = 0; k < am.sub_arches.size(); ++k)
          if (!known(kArchitectures, am.sub_arches[k]))
            fail(w + ".subArchitectures[" + std::to_string(k) + "]",
                 "unknown architecture \"" + am.sub_arches[k] + "\"");
        p.arch_map.push_back(std::move(am));
      }
    }
    p.flags = strings(j, "flags", "");
    for (size_t i = 0; i < p.flags.size(); ++i)
      if (!known(kFlags, p.flags[i]))
        fail("flags[" + std::to_string(i) + "]", "unknown flag \"" + p.flags[i] + "\"");
    p.listener_path = str(j, "listenerPath", "").value_or("");
    p.listener_metadata = str(j, "listenerMetadata", "").value_or("");
    const json* calls = array(j, "syscalls", "");
    if (!calls) return p;
    for (size_t i = 0; i < calls->size(); ++i) {
      std::string w = "syscalls[" + std::to_string(i) + "]";
      const json& c = (*calls)[i];
      expect_object(c, w);
      SeccompProfileRule r;
      r.names = strings(c, "names", w);
      if (auto name = str(c, "name", w)) {
        if (!r.names.empty()) fail(w, "use either name or names, not both");
        r.names = {*name};
      }
      if (r.names.empty()) fail(w + ".names", "required");
      for (size_t n = 0; n < r.names.size(); ++n)
        if (r.names[n].empty()) fail(w + ".names[" + std::to_string(n) + "]", "empty syscall name");
      r.action = action(c, w, "action");
      if (auto e = uint(c, "errnoRet", w, 0xffff)) r.errno_ret = static_cast<uint32_t>(*e);
      if (r.action == "SCMP_ACT_NOTIFY" && p.listener_path.empty())
        fail(w + ".action", "SCMP_ACT_NOTIFY needs listenerPath");
      if (const json* args = array(c, "args", w)) {
        for (size_t a = 0; a < args->size(); ++a) {
          std::string aw = w + ".args[" + std::to_string(a) + "]";
          const json& aj = (*args)[a];
          expect_object(aj, aw);
          SeccompProfileArg arg;
          arg.index = static_cast<unsigned>(uint(aj, "index", aw, 5).value_or(0));
          arg.value = uint(aj, "value", aw, std::numeric_limits<uint64_t>::max()).value_or(0);
          arg.value_two =
              uint(aj, "valueTwo", aw, std::numeric_limits<uint64_t>::max()).value_or(0);
          auto op = str(aj, "op", aw);
          if (!op) fail(aw + ".op", "required");
          if (!known(kOperators, *op)) fail(aw + ".op", "unknown operator \"" + *op + "\"");
          arg.op = *op;
          r.args.push_back(arg);
        }
      }
      r.includes = filter(c, "includes", w);
      r.excludes = filter(c, "excludes", w);
      p.syscalls.push_back(std::move(r));
    }
    return p;
  }

 private:
  std::string source_;
};

bool has(const std::vector<std::string>& v, const std::string& s) {
  return std::find(v.begin(), v.end(), s) != v.end();
}

// docker's rule selection
bool applies(const SeccompProfileRule& r, const std::vector<std::string>& caps) {
  const SeccompFilter& ex = r.excludes;
  if (std::any_of(ex.arches.begin(), ex.arches.end(), is_native)) return false;
  for (auto& c : ex.caps)
    if (has(caps, c)) return false;
  if (!ex.min_kernel.empty() && kernel_at_least(ex.min_kernel)) return false;
  const SeccompFilter& in = r.includes;
  if (!in.arches.empty() && std::none_of(in.arches.begin(), in.arches.end(), is_native))
    return false;
  for (auto& c : in.caps)
    if (!has(caps, c)) return false;
  if (!in.min_kernel.empty() && !kernel_at_least(in.min_kernel)) return false;
  return true;
}

SeccompProfile parse_builtin(const char* text, const char* name) {
  return parse_seccomp_profile(text, name);
}

}  // namespace

SeccompProfile parse_seccomp_profile(std::string_view text, const std::string& source) {
  Reader reader(source);
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {  // parse_error, and out_of_range for 1e309
    reader.fail("", "invalid JSON: " + json_error_text(e.what()));
  }
  return reader.profile(j);
}

json resolve_seccomp_profile(const SeccompProfile& p, const std::vector<std::string>& caps) {
  json out = {{"defaultAction", p.default_action}};
  if (p.default_errno_ret) out["defaultErrnoRet"] = *p.default_errno_ret;
  json arches = json::array();
  for (auto& a : p.architectures) arches.push_back(a);
  for (auto& m : p.arch_map) {
    if (m.arch != kNativeScmp) continue;
    arches.push_back(m.arch);
    for (auto& s : m.sub_arches) arches.push_back(s);
  }
  if (!arches.empty()) out["architectures"] = arches;
  if (!p.flags.empty()) out["flags"] = p.flags;
  if (!p.listener_path.empty()) out["listenerPath"] = p.listener_path;
  if (!p.listener_metadata.empty()) out["listenerMetadata"] = p.listener_metadata;
  json calls = json::array();
  for (auto& r : p.syscalls) {
    if (!applies(r, caps)) continue;
    json c = {{"names", r.names}, {"action", r.action}};
    if (r.errno_ret) c["errnoRet"] = *r.errno_ret;
    if (!r.args.empty()) {
      json args = json::array();
      for (auto& a : r.args)
        args.push_back(
            {{"index", a.index}, {"value", a.value}, {"valueTwo", a.value_two}, {"op", a.op}});
      c["args"] = args;
    }
    calls.push_back(std::move(c));
  }
  out["syscalls"] = calls;
  return out;
}

const SeccompProfile& default_seccomp_profile() {
  static const SeccompProfile p = parse_builtin(kDefaultSeccompProfile, "(built-in default)");
  return p;
}

const SeccompProfile& os_init_seccomp_profile() {
  static const SeccompProfile p = parse_builtin(kOsInitSeccompProfile, "(built-in os-default)");
  return p;
}

SeccompChoice load_seccomp_profile_file(const std::string& path) {
  std::string text;
  try {
    text = read_file(path);
  } catch (const Error& e) {
    throw Error("seccomp profile " + path + ": " + std::string(e.what()), e.err(),
                ErrorKind::invalid);
  }
  auto profile = std::make_shared<SeccompProfile>(parse_seccomp_profile(text, path));
  // what the parse cannot see (e.g. a rule libseccomp refuses) shows when compiled
  try {
    json resolved = resolve_seccomp_profile(*profile, {});
    oci::Seccomp oci = oci::parse_seccomp(resolved, "linux.seccomp");
    runtime::compile_seccomp(oci);
  } catch (const Error& e) {
    std::string msg = e.what();
    for (const char* prefix : {"config.json: linux.seccomp.", "config.json: linux.seccomp"})
      if (msg.starts_with(prefix)) {
        msg = msg.substr(std::string_view(prefix).size());
        break;
      }
    throw Error("seccomp profile " + path + ": " + msg, EINVAL, ErrorKind::invalid);
  }
  SeccompChoice choice;
  choice.kind = SeccompChoice::Kind::file;
  choice.path = path;
  choice.profile = std::move(profile);
  return choice;
}

void apply_seccomp(json& config, const SeccompChoice& choice, bool os_init) {
  auto& lx = config["linux"];
  auto& annotations = config["annotations"];
  if (choice.kind == SeccompChoice::Kind::unconfined) {
    lx.erase("seccomp");
    annotations[kSeccompAnnotation] = "unconfined";
    return;
  }
  std::vector<std::string> caps;
  const json& proc = config["process"];
  if (proc.contains("capabilities") && proc["capabilities"].contains("bounding"))
    for (auto& c : proc["capabilities"]["bounding"])
      if (c.is_string()) caps.push_back(c.get<std::string>());
  const SeccompProfile& profile = choice.kind == SeccompChoice::Kind::file ? *choice.profile
                                  : os_init ? os_init_seccomp_profile()
                                            : default_seccomp_profile();
  lx["seccomp"] = resolve_seccomp_profile(profile, caps);
  annotations[kSeccompAnnotation] = choice.kind == SeccompChoice::Kind::file ? choice.path
                                    : os_init                                ? "os-default"
                                                                             : "default";
}

}  // namespace racker::engine
