// racker run by an ordinary user. The user's racker processes all live in one user namespace
// and one mount namespace. In them the user is root: uid 0 is the user, and 1..N are the
// user's subordinate ids from /etc/subuid and /etc/subgid, mapped by the setuid helpers
// newuidmap/newgidmap. A pause process holds the namespaces, as podman's does. The store is
// then the user's own: $XDG_DATA_HOME/racker (~/.local/share/racker), with runtime state under
// $XDG_RUNTIME_DIR/racker (else /tmp/racker-UID). Inside, layers unpack with their owners
// mapped, and overlayfs mounts with userxattr. Mounts made by one racker invocation
// (a detached container's rootfs) stay for the next.
#pragma once

#include <string>

namespace racker::engine {

// True when this process runs in a user namespace other than the host's, i.e. as the root
// of a rootless racker (/proc/self/uid_map does not map 0 to 0).
bool rootless();

// The defaults for --root and the runtime state: root's /var/lib/racker and /run/racker,
// an ordinary user's (also inside the namespace) under XDG directories.
std::string default_store_root();
std::string default_state_root();

// Called first thing in main by an ordinary user: joins the namespaces of the user's pause
// process, made when there is none (or it died), and becomes root in them. Prints a one-line
// warning when the user has no subordinate ids (only the user's own id is mapped then).
// Throws racker::Error with a line that says how to fix a missing helper or range.
void enter_rootless_namespaces();

// The cgroup (a path in the unified hierarchy) delegated to a rootless racker: the topmost
// ancestor of its own cgroup that the user owns and may write, as systemd's user@UID.service
// is on an ordinary cgroup v2 host; "" when its cgroup is not the user's (an ssh session's
// scope, this host's root cgroup). Containers get theirs below it (racker/<id>).
std::string delegated_cgroup();

// The pause process' pid file ("" for root): tests stop it with SIGTERM.
std::string pause_pid_file();

}  // namespace racker::engine
