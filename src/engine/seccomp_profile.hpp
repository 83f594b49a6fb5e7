// Seccomp profiles in docker's JSON format (what `docker run --security-opt seccomp=FILE`
// reads): a default action, an allow-list, rules that apply only with some capabilities,
// architectures or kernels (includes/excludes), an archMap. This module parses and checks such
// a profile and resolves it, for one container's capabilities, into the OCI linux.seccomp
// object the runtime compiles. Two profiles are built in (data/seccomp/*.json): docker's
// default semantics for plain containers and an nspawn-like one for the init of OS containers.
// Pure: it never touches the host beyond uname(2), so it is unit-tested without root.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace racker::engine {

struct SeccompProfileArg {
  unsigned index = 0;
  uint64_t value = 0;
  uint64_t value_two = 0;
  std::string op;  // SCMP_CMP_*
};

// includes / excludes of a rule: Go-style architecture names (amd64, arm64, ...), capability
// names, a minimum kernel "MAJOR.MINOR".
struct SeccompFilter {
  std::vector<std::string> arches;
  std::vector<std::string> caps;
  std::string min_kernel;
  bool empty() const { return arches.empty() && caps.empty() && min_kernel.empty(); }
};

struct SeccompProfileRule {
  std::vector<std::string> names;
  std::string action;
  std::optional<uint32_t> errno_ret;
  std::vector<SeccompProfileArg> args;
  SeccompFilter includes, excludes;
};

struct SeccompArchMap {
  std::string arch;  // SCMP_ARCH_*
  std::vector<std::string> sub_arches;
};

struct SeccompProfile {
  std::string default_action;
  std::optional<uint32_t> default_errno_ret;
  std::vector<std::string> architectures;
  std::vector<SeccompArchMap> arch_map;
  std::vector<std::string> flags;
  std::string listener_path, listener_metadata;
  std::vector<SeccompProfileRule> syscalls;
};

// Parses a profile; every field is checked (types, actions, operators, architectures,
// capabilities, flags, errno values). Throws racker::Error (ErrorKind::invalid) with one line
// "seccomp profile SOURCE: FIELD: problem".
SeccompProfile parse_seccomp_profile(std::string_view text, const std::string& source);

// The rules that apply to a process with these bounding capabilities on this machine, as an
// OCI linux.seccomp object. includes: all of its caps, its arch, kernel >= minKernel;
// excludes: any of its caps, its arch, kernel >= minKernel (as docker does).
nlohmann::json resolve_seccomp_profile(const SeccompProfile& profile,
                                       const std::vector<std::string>& bounding_caps);

// The built-in profiles, parsed once per process.
const SeccompProfile& default_seccomp_profile();  // plain containers: docker's semantics
const SeccompProfile& os_init_seccomp_profile();  // the systemd of OS containers

// What --security-opt seccomp= (and --privileged) chose for a container.
struct SeccompChoice {
  enum class Kind { builtin, unconfined, file } kind = Kind::builtin;
  std::string path;                               // Kind::file: the profile's path
  std::shared_ptr<const SeccompProfile> profile;  // Kind::file: parsed (and checked) at parse time

  static SeccompChoice unconfined() {
    SeccompChoice c;
    c.kind = Kind::unconfined;
    return c;
  }
};

// Reads and checks a profile file; the profile is also compiled once (with docker's default
// capabilities) so that nothing the runtime would refuse gets as far as making a container.
// Throws racker::Error (ErrorKind::invalid), one line naming the file and the field.
SeccompChoice load_seccomp_profile_file(const std::string& path);

// What `racker inspect` shows as the profile in effect: "default", "os-default", "unconfined"
// or the file's path.
inline constexpr const char* kSeccompAnnotation = "org.racker.seccomp";

// Sets config's linux.seccomp for its process' bounding capabilities: the built-in profile
// (the OS init's when os_init), the chosen file, or none (unconfined); records the choice in
// the kSeccompAnnotation annotation.
void apply_seccomp(nlohmann::json& config, const SeccompChoice& choice, bool os_init);

}  // namespace racker::engine
