#include "runtime/hooks.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>

#include "base/error.hpp"
#include "base/fd.hpp"
#include "base/log.hpp"

namespace racker::runtime {

void run_hook(const oci::Hook& hook, const std::string& state_json) {
  int p[2];
  if (::pipe2(p, O_CLOEXEC) != 0) throw_errno("pipe");
  UniqueFd rd(p[0]), wr(p[1]);
  std::vector<std::string> args =
      hook.args.empty() ? std::vector<std::string>{hook.path} : hook.args;
  std::vector<char*> argv, envp;
  for (auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  for (auto& e : hook.env) envp.push_back(const_cast<char*>(e.c_str()));
  envp.push_back(nullptr);
  pid_t pid = ::fork();
  if (pid < 0) throw_errno("fork hook " + hook.path);
  if (pid == 0) {
    ::dup2(rd.get(), 0);
    ::signal(SIGPIPE, SIG_DFL);
    ::execve(hook.path.c_str(), argv.data(), envp.data());
    _exit(127);
  }
  rd.reset();
  // a hook that does not read its stdin must not make us fail: ignore EPIPE
  (void)write_all(wr.get(), state_json.data(), state_json.size());
  wr.reset();
  int status = 0;
  if (hook.timeout) {
    int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
    struct pollfd pfd = {pidfd, POLLIN, 0};
    int r = pidfd >= 0 ? ::poll(&pfd, 1, *hook.timeout * 1000) : 1;
    if (pidfd >= 0) ::close(pidfd);
    if (r == 0) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      throw Error("hook " + hook.path + " timed out after " + std::to_string(*hook.timeout) + "s",
                  ETIMEDOUT);
    }
  }
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) throw_errno("wait for hook " + hook.path);
  }
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return;
  if (WIFEXITED(status))
    throw Error("hook " + hook.path + " exited with status " + std::to_string(WEXITSTATUS(status)),
                ECHILD);
  throw Error("hook " + hook.path + " killed by signal " + std::to_string(WTERMSIG(status)),
              ECHILD);
}

void run_hooks(const std::vector<oci::Hook>& hooks, const std::string& kind,
               const std::string& state_json, bool warn_only) {
  for (size_t i = 0; i < hooks.size(); ++i) {
    try {
      run_hook(hooks[i], state_json);
    } catch (const Error& e) {
      auto err = e.with_context(kind + " hook #" + std::to_string(i));
      if (!warn_only) throw err;
      log::warn(err.what());
    }
  }
}

}  // namespace racker::runtime
