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
#include <cstdlib>

#include "base/error.hpp"
#include "base/fs.hpp"
#include "base/strings.hpp"

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

namespace {

bool only_self(const std::vector<oci::IdMapping>& maps, uint32_t self) {
  return maps.size() == 1 && maps[0].host_id == self && maps[0].size == 1;
}

// Runs HELPER PID C H S ... (newuidmap/newgidmap); its stderr is passed on. Throws on failure.
void run_map_helper(const char* helper, pid_t pid, const std::vector<oci::IdMapping>& maps,
                    const char* ids_file) {
  std::string path = find_in_path(helper);
  if (path.empty())
    throw Error(std::string("mapping more than your own id needs ") + helper +
                    ", which is not installed (apt-get install uidmap)",
                ENOENT);
  std::vector<std::string> args = {path, std::to_string(pid)};
  for (auto& m : maps) {
    args.push_back(std::to_string(m.container_id));
    args.push_back(std::to_string(m.host_id));
    args.push_back(std::to_string(m.size));
  }
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t child = ::fork();
  if (child < 0) throw_errno(std::string("run ") + helper);
  if (child == 0) {
    ::execv(path.c_str(), argv.data());
    _exit(127);
  }
  int status = 0;
  while (::waitpid(child, &status, 0) < 0 && errno == EINTR) {
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
    throw Error(std::string(helper) + " refused the id mapping: its host ids must be a range of " +
                    "yours in " + ids_file,
                EPERM);
}

}  // namespace

void write_id_maps(pid_t pid, const std::vector<oci::IdMapping>& uid_mappings,
                   const std::vector<oci::IdMapping>& gid_mappings) {
  std::string proc = "/proc/" + std::to_string(pid);
  if (::geteuid() == 0) {
    write_file(proc + "/uid_map", mapping_text(uid_mappings));
    write_file(proc + "/gid_map", mapping_text(gid_mappings));
    return;
  }
  if (only_self(uid_mappings, ::geteuid()))
    write_file(proc + "/uid_map", mapping_text(uid_mappings));
  else
    run_map_helper("newuidmap", pid, uid_mappings, "/etc/subuid");
  if (only_self(gid_mappings, ::getegid())) {
    // an unprivileged gid_map needs setgroups denied (a group could otherwise be dropped)
    write_file(proc + "/setgroups", "deny");
    write_file(proc + "/gid_map", mapping_text(gid_mappings));
  } else {
    run_map_helper("newgidmap", pid, gid_mappings, "/etc/subgid");
  }
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
    write_id_maps(pid, uid_mappings, gid_mappings);
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
