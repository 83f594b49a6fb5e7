#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "base/error.hpp"
#include "engine/seccomp_profile.hpp"
#include "engine/spec_builder.hpp"
#include "oci/spec.hpp"
#include "runtime/seccomp.hpp"

using namespace racker;
using namespace racker::engine;
using nlohmann::json;

namespace {

// The message of the racker::Error parse_seccomp_profile throws for text ("" if none).
std::string error_of(const std::string& text) {
  try {
    parse_seccomp_profile(text, "/p.json");
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::invalid);
    return e.what();
  }
  return "";
}

bool allows(const json& resolved, const std::string& name) {
  for (auto& rule : resolved["syscalls"])
    if (rule["action"] == "SCMP_ACT_ALLOW" && !rule.contains("args"))
      for (auto& n : rule["names"])
        if (n == name) return true;
  return false;
}

}  // namespace

TEST(SeccompProfile, BuiltinProfilesParseAndCompile) {
  for (const SeccompProfile* p : {&default_seccomp_profile(), &os_init_seccomp_profile()}) {
    json resolved = resolve_seccomp_profile(*p, default_capabilities());
    EXPECT_EQ(resolved["defaultAction"], "SCMP_ACT_ERRNO");
    EXPECT_EQ(resolved["defaultErrnoRet"], 1);
    auto program = runtime::compile_seccomp(oci::parse_seccomp(resolved, "linux.seccomp"));
    EXPECT_FALSE(program.bpf.empty());
  }
}

TEST(SeccompProfile, DefaultFollowsCapabilities) {
  json plain = resolve_seccomp_profile(default_seccomp_profile(), default_capabilities());
  for (const char* refused :
       {"mount", "unshare", "setns", "bpf", "perf_event_open", "keyctl", "add_key", "kexec_load",
        "open_by_handle_at", "userfaultfd", "reboot", "ptrace_never_listed"})
    EXPECT_FALSE(allows(plain, refused)) << refused;
  EXPECT_TRUE(allows(plain, "read"));
  EXPECT_TRUE(allows(plain, "chroot"));  // CAP_SYS_CHROOT is a default capability
  auto caps = default_capabilities();
  caps.push_back("CAP_SYS_ADMIN");
  caps.push_back("CAP_DAC_READ_SEARCH");
  json admin = resolve_seccomp_profile(default_seccomp_profile(), caps);
  EXPECT_TRUE(allows(admin, "mount"));
  EXPECT_TRUE(allows(admin, "unshare"));
  EXPECT_TRUE(allows(admin, "clone"));
  EXPECT_TRUE(allows(admin, "open_by_handle_at"));
  EXPECT_FALSE(allows(admin, "keyctl"));
  // without CAP_SYS_ADMIN: clone only with the namespace flags masked, clone3 ENOSYS
  bool masked_clone = false, clone3_enosys = false;
  for (auto& rule : plain["syscalls"]) {
    if (rule["names"] == json{"clone"} && rule.contains("args"))
      masked_clone = rule["args"][0]["op"] == "SCMP_CMP_MASKED_EQ" &&
                     (rule["args"][0]["value"].get<uint64_t>() & 0x10000000);  // CLONE_NEWUSER
    if (rule["names"] == json{"clone3"})
      clone3_enosys = rule["action"] == "SCMP_ACT_ERRNO" && rule["errnoRet"] == 38;
  }
  EXPECT_TRUE(masked_clone);
  EXPECT_TRUE(clone3_enosys);
}

TEST(SeccompProfile, OsProfileNeverAllowsWhatNspawnBlocks) {
  auto caps = default_capabilities();
  for (const char* c :
       {"CAP_SYS_ADMIN", "CAP_DAC_READ_SEARCH", "CAP_SYS_BOOT", "CAP_SYS_PTRACE", "CAP_SYS_NICE"})
    caps.push_back(c);
  json os = resolve_seccomp_profile(os_init_seccomp_profile(), caps);
  for (const char* refused :
       {"bpf", "perf_event_open", "keyctl", "add_key", "request_key", "kexec_load",
        "open_by_handle_at", "userfaultfd", "swapon", "quotactl", "fanotify_init"})
    EXPECT_FALSE(allows(os, refused)) << refused;
  for (const char* needed : {"mount", "umount2", "unshare", "setns", "pivot_root", "reboot",
                             "clone", "clone3", "sethostname", "ptrace"})
    EXPECT_TRUE(allows(os, needed)) << needed;
}

TEST(SeccompProfile, IncludesExcludesAndArchMap) {
  auto p = parse_seccomp_profile(R"({
    "defaultAction": "SCMP_ACT_ERRNO",
    "archMap": [{"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86"]},
                {"architecture": "SCMP_ARCH_AARCH64", "subArchitectures": ["SCMP_ARCH_ARM"]}],
    "syscalls": [
      {"name": "a", "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_ADMIN"]}},
      {"names": ["b"], "action": "SCMP_ACT_ALLOW", "excludes": {"caps": ["CAP_SYS_ADMIN"]}},
      {"names": ["c"], "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "99.0"}},
      {"names": ["d"], "action": "SCMP_ACT_ALLOW", "excludes": {"minKernel": "2.6"}},
      {"names": ["e"], "action": "SCMP_ACT_ALLOW", "includes": {"arches": ["s390x"]}}
    ]})",
                                 "t");
  json none = resolve_seccomp_profile(p, {});
  json admin = resolve_seccomp_profile(p, {"CAP_SYS_ADMIN"});
  EXPECT_FALSE(allows(none, "a"));
  EXPECT_TRUE(allows(admin, "a"));
  EXPECT_TRUE(allows(none, "b"));
  EXPECT_FALSE(allows(admin, "b"));
  EXPECT_FALSE(allows(none, "c"));
  EXPECT_FALSE(allows(none, "d"));
#if defined(__x86_64__)
  EXPECT_FALSE(allows(none, "e"));
  EXPECT_EQ(none["architectures"], (json{"SCMP_ARCH_X86_64", "SCMP_ARCH_X86"}));
#endif
}

TEST(SeccompProfile, BadFieldsNameTheFileAndField) {
  struct Case {
    const char* text;
    const char* needle;
  } cases[] = {
      {R"({"defaultAction": "SCMP_ACT_NOPE"})", "/p.json: defaultAction: unknown action"},
      {R"({})", "defaultAction: required"},
      {R"({"defaultAction": 1})", "defaultAction: expected a string"},
      {R"({"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": -1})", "defaultErrnoRet"},
      {R"({"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 70000})", "out of range"},
      {R"({"defaultAction": "SCMP_ACT_NOTIFY"})", "cannot be the default"},
      {R"({"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_Z80"]})",
       "architectures[0]: unknown architecture"},
      {R"({"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86"],
           "archMap": [{"architecture": "SCMP_ARCH_X86_64"}]})",
       "either architectures or archMap"},
      {R"({"defaultAction": "SCMP_ACT_ALLOW", "archMap": [{"subArchitectures": []}]})",
       "archMap[0].architecture: required"},
      {R"({"defaultAction": "SCMP_ACT_ALLOW", "flags": ["SECCOMP_FILTER_FLAG_FAST"]})",
       "flags[0]: unknown flag"},
      {R"({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": {}})", "syscalls: expected an array"},
      {R"({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [7]})",
       "syscalls[0]: expected an object"},
      {R"({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"action": "SCMP_ACT_ALLOW"}]})",
       "syscalls[0].names: required"},
      {R"({"defaultAction": "SCMP_ACT_ALLOW",
           "syscalls": [{"name": "a", "names": ["b"], "action": "SCMP_ACT_ALLOW"}]})",
       "either name or names"},
      {R"({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": [1], "action": "SCMP_ACT_ALLOW"}]})",
       "syscalls[0].names[0]: expected a string"},
      {R"({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["a"], "action": "X"}]})",
       "syscalls[0].action: unknown action \"X\""},
      {R"({"defaultAction": "SCMP_ACT_ALLOW",
           "syscalls": [{"names": ["a"], "action": "SCMP_ACT_NOTIFY"}]})",
       "needs listenerPath"},
      {R"({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["a"], "action":
           "SCMP_ACT_ERRNO", "args": [{"index": 9, "value": 0, "op": "SCMP_CMP_EQ"}]}]})",
       "syscalls[0].args[0].index"},
      {R"({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["a"], "action":
           "SCMP_ACT_ERRNO", "args": [{"index": 0, "value": 0, "op": "SCMP_CMP_ABOUT"}]}]})",
       "syscalls[0].args[0].op: unknown operator"},
      {R"({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["a"], "action":
           "SCMP_ACT_ERRNO", "args": [{"index": 0, "value": -5, "op": "SCMP_CMP_EQ"}]}]})",
       "syscalls[0].args[0].value"},
      {R"({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["a"], "action":
           "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_FLY"]}}]})",
       "syscalls[0].includes.caps[0]: unknown capability"},
      {R"({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["a"], "action":
           "SCMP_ACT_ALLOW", "excludes": {"arches": ["vax"]}}]})",
       "syscalls[0].excludes.arches[0]: unknown architecture"},
      {R"({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["a"], "action":
           "SCMP_ACT_ALLOW", "includes": {"minKernel": "five"}}]})",
       "syscalls[0].includes.minKernel"},
      {R"([])", "(top level): expected an object"},
      {R"({"defaultAction": )", "invalid JSON"},
      {"", "invalid JSON"},
  };
  for (auto& c : cases) {
    std::string msg = error_of(c.text);
    EXPECT_NE(msg.find("seccomp profile /p.json: "), std::string::npos) << c.text << " -> " << msg;
    EXPECT_NE(msg.find(c.needle), std::string::npos) << c.text << " -> " << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  }
}

TEST(SeccompProfile, HostileInputDoesNotCrash) {
  // deep nesting, huge numbers, odd unicode: each either parses or throws racker::Error
  std::string deep = std::string(100000, '[') + std::string(100000, ']');
  for (
      const std::string& text :
      {deep,
       std::string(
           R"({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["\u0000"], "action": "SCMP_ACT_ALLOW"}]})"),
       std::string(R"({"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 1e309})"),
       std::string(
           R"({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": [""], "action": "SCMP_ACT_ALLOW"}]})"),
       std::string("\xff\xfe{}")}) {
    try {
      parse_seccomp_profile(text, "h");
    } catch (const Error&) {
    }
  }
}

TEST(SeccompProfile, ApplyRecordsTheChoice) {
  RunFlags f;
  f.args = {"true"};
  json img = {{"config", json::object()}};
  auto built = build_spec(img, f, "/r", std::string(64, 'a'), {});
  EXPECT_TRUE(built.config["linux"].contains("seccomp"));
  EXPECT_EQ(built.config["annotations"][kSeccompAnnotation], "default");
  f.privileged = true;
  built = build_spec(img, f, "/r", std::string(64, 'a'), {});
  EXPECT_FALSE(built.config["linux"].contains("seccomp"));
  EXPECT_EQ(built.config["annotations"][kSeccompAnnotation], "unconfined");
  f.privileged = false;
  f.no_new_privileges = true;
  built = build_spec(img, f, "/r", std::string(64, 'a'), {});
  EXPECT_EQ(built.config["process"]["noNewPrivileges"], true);
  apply_seccomp(built.config, {}, true);
  EXPECT_EQ(built.config["annotations"][kSeccompAnnotation], "os-default");
}
