// Images of another architecture (racker run --platform linux/arm64 ...): their programs run
// through qemu-user, which the kernel starts for them (binfmt_misc). Registered with the
// fix-binary flag (F), the interpreter is opened once at registration, so nothing needs to be
// copied into the image. Debian's qemu-user-static ships the registrations in
// /usr/lib/binfmt.d/qemu-*.conf (systemd-binfmt loads them at boot on ordinary hosts); root's
// racker loads the one it needs where nobody did (a host whose PID 1 is not systemd).
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace racker::engine {

// The OCI architecture of this machine ("amd64", "arm64", ...).
std::string host_oci_arch();

// The qemu-user name of an OCI architecture ("arm64" -> "aarch64"); "" when unknown.
std::string qemu_arch_of(const std::string& oci_arch);

// True when this machine runs arch's programs itself (its own, and i386 on amd64).
bool runs_natively(const std::string& oci_arch);

// Makes sure programs of oci_arch can run here: nothing for the host's own; else binfmt_misc
// mounted and a qemu-<arch> entry, enabled, with the fix-binary flag (loaded from
// /usr/lib/binfmt.d or /etc/binfmt.d by root when missing). Throws a one-line racker::Error
// saying what is missing and how to get it.
void ensure_runnable_arch(const std::string& oci_arch);

// The command that makes an emulated system's init get signal ("SIGRTMIN+3", "RTMIN+3", "TERM")
// as the guest means it: qemu-user maps real-time signals onto other host numbers, so it is
// sent by the guest's own kill, run through the same qemu.
std::vector<std::string> guest_kill_argv(std::string_view signal);

}  // namespace racker::engine
