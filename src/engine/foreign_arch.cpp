#include "engine/foreign_arch.hpp"

#include <sys/mount.h>
#include <sys/utsname.h>

#include <cerrno>
#include <map>
#include <mutex>

#include "base/error.hpp"
#include "base/fs.hpp"
#include "base/ids.hpp"
#include "base/log.hpp"
#include "base/strings.hpp"

namespace racker::engine {
namespace {

constexpr const char* kBinfmt = "/proc/sys/fs/binfmt_misc";

const std::map<std::string, std::string>& oci_to_qemu() {
  static const std::map<std::string, std::string> m = {
      {"amd64", "x86_64"},    {"386", "i386"},
      {"arm64", "aarch64"},   {"arm", "arm"},
      {"ppc64le", "ppc64le"}, {"riscv64", "riscv64"},
      {"s390x", "s390x"},     {"mips64le", "mips64el"},
      {"mipsle", "mipsel"},   {"loong64", "loongarch64"}};
  return m;
}

Error missing(const std::string& arch, const std::string& what) {
  return Error("an " + arch + " image runs here through qemu-user, but " + what, ENOEXEC,
               ErrorKind::cannot_execute);
}

// "enabled", "interpreter ...", "flags: OCF", ... of a registered entry
std::map<std::string, std::string> entry_fields(const std::string& text) {
  std::map<std::string, std::string> out;
  for (auto& line : split(text, '\n')) {
    std::string l = trim(line);
    if (l == "enabled" || l == "disabled") {
      out["state"] = l;
      continue;
    }
    auto sp = l.find_first_of(" :");
    if (sp != std::string::npos) out[l.substr(0, sp)] = trim(l.substr(sp + 1));
  }
  return out;
}

}  // namespace

std::string host_oci_arch() {
  struct utsname u;
  if (::uname(&u) != 0) return "";
  std::string m = u.machine;
  for (auto& [oci, q] : oci_to_qemu())
    if (q == m) return oci;
  if (m == "armv7l" || m == "armv6l") return "arm";
  return m;
}

std::string qemu_arch_of(const std::string& oci_arch) {
  auto it = oci_to_qemu().find(oci_arch);
  return it == oci_to_qemu().end() ? "" : it->second;
}

bool runs_natively(const std::string& oci_arch) {
  std::string host = host_oci_arch();
  return oci_arch.empty() || oci_arch == host || (host == "amd64" && oci_arch == "386");
}

void ensure_runnable_arch(const std::string& arch) {
  if (runs_natively(arch)) return;
  static std::mutex mu;  // (one registration at a time in this process)
  std::lock_guard<std::mutex> lock(mu);
  std::string q = qemu_arch_of(arch);
  if (q.empty())
    throw Error("the image's architecture \"" + arch + "\" is not one qemu-user emulates", ENOEXEC,
                ErrorKind::cannot_execute);
  std::string status = std::string(kBinfmt) + "/status";
  if (!path_exists(status)) {
    if (!host_root() || ::mount("binfmt_misc", kBinfmt, "binfmt_misc",
                                MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr) != 0)
      throw missing(arch, std::string("binfmt_misc is not mounted (as root: mount -t "
                                      "binfmt_misc binfmt_misc ") +
                              kBinfmt + ")");
    log::debug("foreign arch: mounted binfmt_misc at " + std::string(kBinfmt));
  }
  std::string entry = std::string(kBinfmt) + "/qemu-" + q;
  auto text = read_file_if_exists(entry);
  if (!text) {
    std::string conf;
    for (const char* dir : {"/etc/binfmt.d", "/usr/lib/binfmt.d", "/run/binfmt.d"})
      if (auto c = read_file_if_exists(std::string(dir) + "/qemu-" + q + ".conf")) {
        for (auto& line : split(*c, '\n'))
          if (trim(line).starts_with(":qemu-" + q + ":")) conf = trim(line);
        if (!conf.empty()) break;
      }
    if (conf.empty())
      throw missing(arch, "no qemu-" + q +
                              " interpreter is registered or installed (apt-get install "
                              "qemu-user-static)");
    if (!host_root())
      throw missing(arch, "qemu-" + q + " is not registered in binfmt_misc (as root: echo '" +
                              conf + "' > " + kBinfmt + "/register, or systemd-binfmt)");
    try {
      write_file(std::string(kBinfmt) + "/register", conf);
    } catch (const Error& e) {
      if (e.err() != EEXIST)
        throw missing(arch, std::string("registering qemu-") + q + " failed: " + e.what());
    }
    log::debug("foreign arch: registered qemu-" + q + " from its binfmt.d file");
    text = read_file_if_exists(entry);
    if (!text) throw missing(arch, "qemu-" + q + " did not register");
  }
  auto f = entry_fields(*text);
  if (f["state"] != "enabled")
    throw missing(arch,
                  "binfmt_misc's qemu-" + q + " is disabled (as root: echo 1 > " + entry + ")");
  if (f["flags"].find('F') == std::string::npos)
    throw missing(arch, "binfmt_misc's qemu-" + q +
                            " lacks the fix-binary flag F, so its interpreter (" +
                            f["interpreter"] +
                            ") would have to be in the image: register it again with F "
                            "(qemu-user-static's /usr/lib/binfmt.d files have it)");
}

std::vector<std::string> guest_kill_argv(std::string_view signal) {
  if (signal.starts_with("SIG")) signal.remove_prefix(3);
  return {"sh", "-c", "kill -s " + std::string(signal) + " 1"};
}

}  // namespace racker::engine
