// Messages between the runtime and the container init over a SOCK_SEQPACKET socketpair.
// Errors in the init travel back as text with their errno and kind; nothing throws across the
// fork.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

#include <sys/socket.h>

#include "base/error.hpp"

namespace racker::runtime {

enum class SyncType : uint32_t {
  go = 1,          // parent -> init: ids mapped, cgroup joined: carry on
  run_hooks = 2,   // init -> parent: namespaces and mounts ready, run prestart/createRuntime
  hooks_done = 3,  // parent -> init: text = state JSON for createContainer/startContainer
  ready = 4,       // init -> parent: set up, waiting on exec.fifo
  error = 5,       // init -> parent: text = message, err = errno, kind = ErrorKind
  child_pid = 6,   // exec's intermediate -> parent: text = the pid of the process it forked
};

struct SyncMessage {
  SyncType type{};
  int32_t err = 0;
  uint32_t kind = 0;
  uint32_t len = 0;
  char text[8192 - 16];
};
inline constexpr size_t kSyncHeader = offsetof(SyncMessage, text);

inline bool sync_send(int fd, SyncType type, const std::string& text = "", int err = 0,
                      ErrorKind kind = ErrorKind::failed) {
  SyncMessage m;
  m.type = type;
  m.err = err;
  m.kind = static_cast<uint32_t>(kind);
  m.len = static_cast<uint32_t>(std::min(text.size(), sizeof m.text));
  std::memcpy(m.text, text.data(), m.len);
  ssize_t n;
  do {
    n = ::send(fd, &m, kSyncHeader + m.len, MSG_NOSIGNAL);
  } while (n < 0 && errno == EINTR);
  return n >= 0;
}

// Returns false on EOF or error.
inline bool sync_recv(int fd, SyncMessage* m) {
  ssize_t n;
  do {
    n = ::recv(fd, m, sizeof *m, 0);
  } while (n < 0 && errno == EINTR);
  if (n < static_cast<ssize_t>(kSyncHeader)) return false;
  if (m->len > sizeof m->text) m->len = sizeof m->text;
  return true;
}

inline std::string sync_text(const SyncMessage& m) {
  return std::string(m.text, m.len);
}

// An exception in the init, sent to the parent as an error message.
inline bool send_error(int fd, const std::exception& e) {
  auto* re = dynamic_cast<const Error*>(&e);
  return sync_send(fd, SyncType::error, e.what(), re ? re->err() : 0,
                   re ? re->kind() : ErrorKind::failed);
}

// The Error an init's error message stands for.
inline Error sync_error(const SyncMessage& m) {
  auto kind = m.kind <= static_cast<uint32_t>(ErrorKind::interrupted)
                  ? static_cast<ErrorKind>(m.kind)
                  : ErrorKind::failed;
  return Error(sync_text(m), m.err, kind);
}

}  // namespace racker::runtime
