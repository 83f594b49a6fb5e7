#include "runtime/idmap.hpp"

#include <fcntl.h>
#include <linux/mount.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>

#include "base/error.hpp"
#include "base/fs.hpp"

namespace racker::runtime {

std::optional<uint32_t> host_id_of_root(const std::vector<oci::IdMapping>& mappings) {
  for (auto& m : mappings)
    if (m.container_id == 0 && m.size > 0) return m.host_id;
  return std::nullopt;
}

std::string mapping_text(const std::vector<oci::IdMapping>& mappings) {
  std::string out;
  for (auto& m : mappings)
    out += std::to_string(m.container_id) + " " + std::to_string(m.host_id) + " " +
           std::to_string(m.size) + "\n";
  return out;
}

UniqueFd make_userns(const std::vector<oci::IdMapping>& uid_mappings,
                     const std::vector<oci::IdMapping>& gid_mappings) {
  int pipefd[2];
  if (::pipe2(pipefd, O_CLOEXEC) != 0) throw_errno("pipe");
  UniqueFd rd(pipefd[0]), wr(pipefd[1]);
  // the child only unshares and waits for the pipe to close: no allocation after fork
  pid_t pid =
      static_cast<pid_t>(::syscall(SYS_clone, static_cast<unsigned long>(CLONE_NEWUSER) | SIGCHLD,
                                   nullptr, nullptr, nullptr, 0));
  if (pid < 0) throw_errno("create a user namespace for an id mapping");
  if (pid == 0) {
    wr.reset();
    char c;
    while (::read(rd.get(), &c, 1) < 0 && errno == EINTR) {
    }
    _exit(0);
  }
  rd.reset();
  auto reap = [&] {
    wr.reset();
    while (::waitpid(pid, nullptr, 0) < 0 && errno == EINTR) {
    }
  };
  try {
    std::string proc = "/proc/" + std::to_string(pid);
    write_file(proc + "/uid_map", mapping_text(uid_mappings));
    write_file(proc + "/gid_map", mapping_text(gid_mappings));
    UniqueFd ns(::open((proc + "/ns/user").c_str(), O_RDONLY | O_CLOEXEC));
    if (!ns) throw_errno("open " + proc + "/ns/user");
    reap();
    return ns;
  } catch (...) {
    ::kill(pid, SIGKILL);
    reap();
    throw;
  }
}

UniqueFd clone_tree(const std::string& path, bool recursive, int userns_fd) {
  unsigned flags = OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | (recursive ? AT_RECURSIVE : 0);
  UniqueFd tree(static_cast<int>(::syscall(SYS_open_tree, AT_FDCWD, path.c_str(), flags)));
  if (!tree) throw_errno("clone the mount tree at " + path);
  if (userns_fd >= 0) {
    struct mount_attr attr {};
    attr.attr_set = MOUNT_ATTR_IDMAP;
    attr.userns_fd = static_cast<uint64_t>(userns_fd);
    if (::syscall(SYS_mount_setattr, tree.get(), "", AT_EMPTY_PATH | (recursive ? AT_RECURSIVE : 0),
                  &attr, sizeof attr) != 0)
      throw_errno("id-mapped mount of " + path);
  }
  return tree;
}

void attach_tree(int tree_fd, const std::string& target) {
  if (::syscall(SYS_move_mount, tree_fd, "", AT_FDCWD, target.c_str(), MOVE_MOUNT_F_EMPTY_PATH) !=
      0)
    throw_errno("attach mount at " + target);
}

EffectiveIds::EffectiveIds(uid_t uid, gid_t gid) {
  dumpable_ = ::prctl(PR_GET_DUMPABLE, 0, 0, 0, 0);
  if (::syscall(SYS_setresgid, -1, gid, -1) != 0) throw_errno("set effective gid");
  if (::syscall(SYS_setresuid, -1, uid, -1) != 0) {
    int e = errno;
    (void)::syscall(SYS_setresgid, -1, 0, -1);
    throw_errno("set effective uid", e);
  }
}

EffectiveIds::~EffectiveIds() {
  // real and saved ids are 0: switching back cannot fail
  (void)::syscall(SYS_setresuid, -1, 0, -1);
  (void)::syscall(SYS_setresgid, -1, 0, -1);
  if (dumpable_ > 0) ::prctl(PR_SET_DUMPABLE, dumpable_, 0, 0, 0);
}

}  // namespace racker::runtime
