// Terminals and fd passing: the pty the container's process gets, and SCM_RIGHTS helpers used
// for --console-socket and between the runtime and the container init.
#pragma once

#include <sys/types.h>

#include <string>

#include "base/fd.hpp"

namespace racker::runtime {

// Sends fd over a unix socket with a short text payload. Returns false on error (errno set).
bool send_fd(int sock, int fd, const std::string& payload);
// Receives one fd; returns -1 on error.
int recv_fd(int sock, std::string* payload);
// Connects to a unix stream socket at path. Throws racker::Error naming the path.
UniqueFd connect_unix(const std::string& path);

// Opens a new pty pair from the devpts at /dev (the container's after pivot_root).
// Returns 0 and sets master and slave_path, or -errno. No exceptions (runs in the init).
int open_pty(int* master, std::string* slave_path);

// Gives the pty the window size of our terminal (stdin, else stdout, else stderr).
bool copy_window_size(int master);

// Copies bytes between the caller's stdio and a pty master until the master hangs up,
// keeping the window size in step (SIGWINCH). Puts the local terminal in raw mode meanwhile.
// SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1/2 and SIGCONT sent to us meanwhile go on to
// `forward_to` (when > 0), as without a terminal: they must not end the relay by themselves.
// Returns when the pty closes or `stop_fd` becomes readable (may be -1).
void relay_pty(int master, int stop_fd, pid_t forward_to);

}  // namespace racker::runtime
