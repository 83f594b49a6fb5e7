#include "runtime/seccomp.hpp"

#include <linux/seccomp.h>
#include <poll.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <string>

#include <gtest/gtest.h>

#include "base/error.hpp"
#include "base/fd.hpp"

namespace racker::runtime {
namespace {

oci::SeccompSyscall rule(std::vector<std::string> names, std::string action,
                         std::optional<uint32_t> errno_ret = std::nullopt,
                         std::vector<oci::SeccompArg> args = {}) {
  return {.names = std::move(names),
          .action = std::move(action),
          .errno_ret = errno_ret,
          .args = std::move(args)};
}

oci::SeccompArg arg(unsigned index, std::string op, uint64_t value, uint64_t value_two = 0) {
  return {.index = index, .value = value, .value_two = value_two, .op = std::move(op)};
}

oci::Seccomp profile(std::string default_action, std::vector<oci::SeccompSyscall> syscalls) {
  oci::Seccomp s;
  s.default_action = std::move(default_action);
  s.syscalls = std::move(syscalls);
  return s;
}

void expect_error(const oci::Seccomp& s, const std::string& message) {
  try {
    compile_seccomp(s);
    ADD_FAILURE() << "expected error: " << message;
  } catch (const Error& e) {
    EXPECT_EQ(e.what(), message);
  }
}

// Runs fn in a forked child with no_new_privs set (so no CAP_SYS_ADMIN is needed to load a
// filter) and core dumps off; returns the wait status. The filter never reaches this process.
int in_child(const std::function<int()>& fn, pid_t* pid_out = nullptr) {
  pid_t pid = fork();
  if (pid == 0) {
    rlimit no_core{0, 0};
    setrlimit(RLIMIT_CORE, &no_core);
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) _exit(250);
    _exit(fn());
  }
  if (pid_out) *pid_out = pid;
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return status;
}

TEST(CompileSeccomp, DefaultAllowWithErrnoRule) {
  auto p = compile_seccomp(profile("SCMP_ACT_ALLOW", {rule({"getcwd"}, "SCMP_ACT_ERRNO", 42)}));
  EXPECT_FALSE(p.bpf.empty());
  EXPECT_EQ(p.flags, 0u);
  EXPECT_FALSE(p.wants_listener);
}

TEST(CompileSeccomp, EveryOperator) {
  auto s =
      profile("SCMP_ACT_ALLOW",
              {rule({"personality"}, "SCMP_ACT_ERRNO", std::nullopt,
                    {arg(0, "SCMP_CMP_NE", 1), arg(1, "SCMP_CMP_LT", 2), arg(2, "SCMP_CMP_LE", 3),
                     arg(3, "SCMP_CMP_EQ", 4), arg(4, "SCMP_CMP_GE", 5), arg(5, "SCMP_CMP_GT", 6)}),
               rule({"clone"}, "SCMP_ACT_ERRNO", std::nullopt,
                    {arg(0, "SCMP_CMP_MASKED_EQ", 0x7e020000, 0)})});
  EXPECT_FALSE(compile_seccomp(s).bpf.empty());
}

TEST(CompileSeccomp, SeveralComparisonsOfOneArgument) {
  // libseccomp alone would refuse this rule; it must become one rule per comparison.
  auto s = profile("SCMP_ACT_ALLOW", {rule({"personality"}, "SCMP_ACT_ERRNO", std::nullopt,
                                           {arg(0, "SCMP_CMP_EQ", 0), arg(0, "SCMP_CMP_EQ", 8),
                                            arg(0, "SCMP_CMP_EQ", 0xffffffff)})});
  EXPECT_FALSE(compile_seccomp(s).bpf.empty());
}

TEST(CompileSeccomp, EveryAction) {
  auto s = profile("SCMP_ACT_ALLOW", {
                                         rule({"getpid"}, "SCMP_ACT_KILL"),
                                         rule({"getppid"}, "SCMP_ACT_KILL_PROCESS"),
                                         rule({"gettid"}, "SCMP_ACT_KILL_THREAD"),
                                         rule({"getuid"}, "SCMP_ACT_TRAP"),
                                         rule({"getgid"}, "SCMP_ACT_ERRNO"),
                                         rule({"geteuid"}, "SCMP_ACT_ERRNO", 1),
                                         rule({"getegid"}, "SCMP_ACT_TRACE"),
                                         rule({"getpgrp"}, "SCMP_ACT_TRACE", 7),
                                         rule({"getsid"}, "SCMP_ACT_LOG"),
                                         rule({"mkdir", "mkdirat"}, "SCMP_ACT_NOTIFY"),
                                     });
  s.listener_path = "/run/agent.sock";
  s.listener_metadata = "meta";
  auto p = compile_seccomp(s);
  EXPECT_TRUE(p.wants_listener);
  EXPECT_EQ(p.listener_path, "/run/agent.sock");
  EXPECT_EQ(p.listener_metadata, "meta");

  for (const char* def : {"SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL_THREAD",
                          "SCMP_ACT_TRAP", "SCMP_ACT_ERRNO", "SCMP_ACT_TRACE", "SCMP_ACT_LOG"}) {
    SCOPED_TRACE(def);
    auto d = profile(def, {rule({"read", "write", "exit_group"}, "SCMP_ACT_ALLOW")});
    d.default_errno_ret = 38;
    EXPECT_FALSE(compile_seccomp(d).bpf.empty());
  }
}

TEST(CompileSeccomp, RuleRepeatingTheDefaultActionIsSkipped) {
  auto s = profile("SCMP_ACT_ERRNO",
                   {rule({"getcwd"}, "SCMP_ACT_ERRNO"), rule({"mkdir"}, "SCMP_ACT_ERRNO", EPERM)});
  EXPECT_NO_THROW(compile_seccomp(s));
  s.default_errno_ret = 38;  // now EPERM rules differ from the default and are added
  EXPECT_NO_THROW(compile_seccomp(s));
}

TEST(CompileSeccomp, UnknownSyscallNamesAreSkipped) {
  auto s = profile("SCMP_ACT_ALLOW", {rule({"no_such_syscall_racker", "getcwd"}, "SCMP_ACT_ERRNO"),
                                      rule({"another_missing_one"}, "SCMP_ACT_KILL")});
  EXPECT_FALSE(compile_seccomp(s).bpf.empty());
}

TEST(CompileSeccomp, Architectures) {
  for (const char* arch :
       {"SCMP_ARCH_X86", "SCMP_ARCH_X86_64", "SCMP_ARCH_X32", "SCMP_ARCH_ARM", "SCMP_ARCH_AARCH64",
        "SCMP_ARCH_MIPS", "SCMP_ARCH_MIPS64", "SCMP_ARCH_MIPS64N32", "SCMP_ARCH_MIPSEL",
        "SCMP_ARCH_MIPSEL64", "SCMP_ARCH_MIPSEL64N32", "SCMP_ARCH_PPC", "SCMP_ARCH_PPC64",
        "SCMP_ARCH_PPC64LE", "SCMP_ARCH_S390", "SCMP_ARCH_S390X", "SCMP_ARCH_PARISC",
        "SCMP_ARCH_PARISC64", "SCMP_ARCH_RISCV64"}) {
    SCOPED_TRACE(arch);
    auto s = profile("SCMP_ACT_ERRNO", {rule({"read", "write", "socketcall"}, "SCMP_ACT_ALLOW")});
    s.architectures = {arch};
    EXPECT_FALSE(compile_seccomp(s).bpf.empty());
  }
  // Every architecture at once, foreign byte orders included, as a portable profile might.
  auto all = profile("SCMP_ACT_ERRNO", {rule({"read", "write", "socketcall"}, "SCMP_ACT_ALLOW")});
  all.architectures = {"SCMP_ARCH_X86",      "SCMP_ARCH_X86_64",  "SCMP_ARCH_X32",
                       "SCMP_ARCH_AARCH64",  "SCMP_ARCH_ARM",     "SCMP_ARCH_MIPS",
                       "SCMP_ARCH_MIPSEL64", "SCMP_ARCH_PPC64LE", "SCMP_ARCH_S390X",
                       "SCMP_ARCH_RISCV64"};
  EXPECT_FALSE(compile_seccomp(all).bpf.empty());
  // What docker's default profile lists on x86_64 and on arm64.
  for (std::vector<std::string> set :
       {std::vector<std::string>{"SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"},
        std::vector<std::string>{"SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"}}) {
    auto s = profile("SCMP_ACT_ERRNO", {rule({"read", "write", "socketcall"}, "SCMP_ACT_ALLOW")});
    s.architectures = set;
    EXPECT_FALSE(compile_seccomp(s).bpf.empty());
  }
}

TEST(CompileSeccomp, Flags) {
  auto s = profile("SCMP_ACT_ALLOW", {});
  s.flags = {"SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_LOG",
             "SECCOMP_FILTER_FLAG_SPEC_ALLOW"};
  EXPECT_EQ(compile_seccomp(s).flags,
            SECCOMP_FILTER_FLAG_TSYNC | SECCOMP_FILTER_FLAG_LOG | SECCOMP_FILTER_FLAG_SPEC_ALLOW);
#ifdef SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV
  s.flags = {"SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"};
  EXPECT_EQ(compile_seccomp(s).flags, SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV);
#endif
}

TEST(CompileSeccompErrors, UnknownAction) {
  expect_error(profile("SCMP_ACT_ALLOW",
                       {rule({"getcwd"}, "SCMP_ACT_ERRNO"), rule({"mkdir"}, "SCMP_ACT_FOO")}),
               "config.json: linux.seccomp.syscalls[1].action: unknown action \"SCMP_ACT_FOO\"");
  expect_error(profile("SCMP_ACT_BAR", {}),
               "config.json: linux.seccomp.defaultAction: unknown action \"SCMP_ACT_BAR\"");
}

TEST(CompileSeccompErrors, UnknownArchitecture) {
  auto s = profile("SCMP_ACT_ALLOW", {});
  s.architectures = {"SCMP_ARCH_X86_64", "SCMP_ARCH_FOO"};
  expect_error(
      s, "config.json: linux.seccomp.architectures[1]: unknown architecture \"SCMP_ARCH_FOO\"");
}

TEST(CompileSeccompErrors, UnknownOperator) {
  expect_error(
      profile("SCMP_ACT_ALLOW", {rule({"getcwd"}, "SCMP_ACT_ERRNO"),
                                 rule({"mkdir"}, "SCMP_ACT_ERRNO", std::nullopt,
                                      {arg(0, "SCMP_CMP_EQ", 1), arg(1, "SCMP_CMP_FOO", 2)})}),
      "config.json: linux.seccomp.syscalls[1].args[1].op: unknown operator "
      "\"SCMP_CMP_FOO\"");
}

TEST(CompileSeccompErrors, UnknownFlag) {
  auto s = profile("SCMP_ACT_ALLOW", {});
  s.flags = {"X"};
  expect_error(s, "config.json: linux.seccomp.flags[0]: unknown flag \"X\"");
  s.flags = {"SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_NEW_LISTENER"};
  expect_error(s,
               "config.json: linux.seccomp.flags[1]: unknown flag "
               "\"SECCOMP_FILTER_FLAG_NEW_LISTENER\"");
}

TEST(CompileSeccompErrors, Notify) {
  expect_error(profile("SCMP_ACT_ALLOW", {rule({"mkdir"}, "SCMP_ACT_NOTIFY")}),
               "config.json: linux.seccomp.syscalls[0].action: SCMP_ACT_NOTIFY requires "
               "linux.seccomp.listenerPath");

  auto s = profile("SCMP_ACT_NOTIFY", {});
  s.listener_path = "/run/agent.sock";
  expect_error(s,
               "config.json: linux.seccomp.defaultAction: SCMP_ACT_NOTIFY cannot be the default "
               "action (the runtime itself would block)");

  s = profile("SCMP_ACT_ALLOW", {rule({"mkdir", "write"}, "SCMP_ACT_NOTIFY")});
  s.listener_path = "/run/agent.sock";
  expect_error(s,
               "config.json: linux.seccomp.syscalls[0].names[1]: SCMP_ACT_NOTIFY cannot be used "
               "for \"write\"");
}

TEST(CompileSeccompErrors, ErrnoRetOutOfRange) {
  expect_error(profile("SCMP_ACT_ALLOW", {rule({"mkdir"}, "SCMP_ACT_ERRNO", 70000)}),
               "config.json: linux.seccomp.syscalls[0].errnoRet: 70000 does not fit in 16 bits");
  auto s = profile("SCMP_ACT_ERRNO", {});
  s.default_errno_ret = 65536;
  expect_error(s, "config.json: linux.seccomp.defaultErrnoRet: 65536 does not fit in 16 bits");
}

TEST(InstallSeccomp, ErrnoRuleTakesEffect) {
  auto p = compile_seccomp(profile("SCMP_ACT_ALLOW", {rule({"getcwd"}, "SCMP_ACT_ERRNO", 42)}));
  int status = in_child([&] {
    if (install_seccomp(p) != 0) return 200;
    char buf[256];
    errno = 0;
    if (syscall(SYS_getcwd, buf, sizeof(buf)) != -1) return 201;
    return errno;
  });
  ASSERT_TRUE(WIFEXITED(status)) << status;
  EXPECT_EQ(WEXITSTATUS(status), 42);
}

TEST(InstallSeccomp, ArgumentMatchers) {
  auto p = compile_seccomp(profile(
      "SCMP_ACT_ALLOW",
      {// Two comparisons of arg 0: either value matches (separate rules, as runc).
       rule({"getpgid"}, "SCMP_ACT_ERRNO", 43,
            {arg(0, "SCMP_CMP_EQ", 111), arg(0, "SCMP_CMP_EQ", 222)}),
       // Comparisons of different args: all must match.
       rule({"getpgid"}, "SCMP_ACT_ERRNO", 44,
            {arg(0, "SCMP_CMP_EQ", 333), arg(1, "SCMP_CMP_EQ", 5)}),
       rule({"getpgid"}, "SCMP_ACT_ERRNO", 45, {arg(0, "SCMP_CMP_MASKED_EQ", 0xff00, 0x1200)})}));
  int status = in_child([&] {
    if (install_seccomp(p) != 0) return 200;
    auto err = [](long a0, long a1) {
      errno = 0;
      return syscall(SYS_getpgid, a0, a1) == -1 ? errno : 0;
    };
    int bad = 0;
    if (err(111, 0) != 43) bad |= 1;
    if (err(222, 0) != 43) bad |= 2;
    if (err(0, 0) != 0) bad |= 4;
    if (err(333, 5) != 44) bad |= 8;
    if (err(333, 6) == 44) bad |= 16;
    if (err(0x1234, 0) != 45) bad |= 32;
    return bad;
  });
  ASSERT_TRUE(WIFEXITED(status)) << status;
  EXPECT_EQ(WEXITSTATUS(status), 0) << "failed checks bitmask";
}

TEST(InstallSeccomp, KillProcessDefaultWithAllowList) {
  auto p = compile_seccomp(
      profile("SCMP_ACT_KILL_PROCESS",
              {rule({"exit_group", "exit", "getpid", "rt_sigreturn"}, "SCMP_ACT_ALLOW")}));
  int status = in_child([&] {
    if (install_seccomp(p) != 0) return 200;
    syscall(SYS_getpid);
    // The raw syscall: _exit may make others first (ASan's calls sigaltstack).
    syscall(SYS_exit_group, 7);
    return 9;
  });
  ASSERT_TRUE(WIFEXITED(status)) << status;
  EXPECT_EQ(WEXITSTATUS(status), 7);

  status = in_child([&] {
    if (install_seccomp(p) != 0) return 200;
    syscall(SYS_getppid);  // not allowed: the kernel kills us with SIGSYS
    return 8;
  });
  ASSERT_TRUE(WIFSIGNALED(status)) << status;
  EXPECT_EQ(WTERMSIG(status), SIGSYS);
}

TEST(InstallSeccomp, FlagsReachTheKernel) {
  auto s = profile("SCMP_ACT_ALLOW", {rule({"getcwd"}, "SCMP_ACT_ERRNO", 42)});
  s.flags = {"SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_LOG"};
  auto p = compile_seccomp(s);
  int status = in_child([&] { return -install_seccomp(p); });
  ASSERT_TRUE(WIFEXITED(status)) << status;
  EXPECT_EQ(WEXITSTATUS(status), 0);

  // A flag the kernel does not know is an error, not silently dropped.
  p.flags |= 1u << 30;
  status = in_child([&] { return -install_seccomp(p); });
  ASSERT_TRUE(WIFEXITED(status)) << status;
  EXPECT_EQ(WEXITSTATUS(status), EINVAL);
}

TEST(InstallSeccomp, EmptyProgramIsRefused) {
  EXPECT_EQ(install_seccomp(SeccompProgram{}), -EINVAL);
}

// End to end: the child installs a filter with a notify rule, sends the listener fd to an
// agent socket; the agent (this process) answers the notified syscall with an errno.
TEST(InstallSeccomp, NotifyListener) {
  char dir_template[] = "/tmp/racker-seccomp-XXXXXX";
  ASSERT_NE(mkdtemp(dir_template), nullptr);
  std::string dir = dir_template;
  std::string path = dir + "/agent.sock";

  UniqueFd agent(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  ASSERT_TRUE(agent);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
  ASSERT_EQ(bind(agent.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ASSERT_EQ(listen(agent.get(), 1), 0);

  auto s = profile("SCMP_ACT_ALLOW", {rule({"getppid"}, "SCMP_ACT_NOTIFY")});
  s.listener_path = path;
  auto p = compile_seccomp(s);
  const std::string state = R"({"ociVersion":"1.0.2","id":"c1","fds":["seccompFd"]})";

  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
    int fd = install_seccomp(p);
    if (fd < 0) _exit(200);
    try {
      send_seccomp_listener(fd, p.listener_path, state);
    } catch (...) {
      _exit(201);
    }
    close(fd);
    errno = 0;
    _exit(syscall(SYS_getppid) == -1 ? errno : 202);
  }
  // Whatever fails below, do not leave the child blocked in its notified syscall.
  struct Reaper {
    pid_t pid;
    int status = -1;
    ~Reaper() {
      if (status == -1) {
        kill(pid, SIGKILL);
        waitpid(pid, nullptr, 0);
      }
    }
  } reaper{pid};

  pollfd pfd{.fd = agent.get(), .events = POLLIN, .revents = 0};
  ASSERT_EQ(poll(&pfd, 1, 10000), 1) << "no connection from the child";
  UniqueFd conn(accept4(agent.get(), nullptr, nullptr, SOCK_CLOEXEC));
  ASSERT_TRUE(conn);

  char body[512] = {};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
  iovec iov{.iov_base = body, .iov_len = sizeof(body) - 1};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof(control);
  ssize_t n = recvmsg(conn.get(), &msg, MSG_CMSG_CLOEXEC);
  ASSERT_GT(n, 0);
  EXPECT_EQ(std::string(body, n), state);
  cmsghdr* cmsg = CMSG_FIRSTHDR(&msg);
  ASSERT_NE(cmsg, nullptr);
  ASSERT_EQ(cmsg->cmsg_type, SCM_RIGHTS);
  int raw = -1;
  std::memcpy(&raw, CMSG_DATA(cmsg), sizeof(int));
  UniqueFd notify(raw);

  pfd = {.fd = notify.get(), .events = POLLIN, .revents = 0};
  ASSERT_EQ(poll(&pfd, 1, 10000), 1) << "no notification";
  seccomp_notif req{};
  ASSERT_EQ(ioctl(notify.get(), SECCOMP_IOCTL_NOTIF_RECV, &req), 0) << std::strerror(errno);
  EXPECT_EQ(req.data.nr, SYS_getppid);
  EXPECT_EQ(static_cast<pid_t>(req.pid), pid);
  seccomp_notif_resp resp{};
  resp.id = req.id;
  resp.error = -77;
  ASSERT_EQ(ioctl(notify.get(), SECCOMP_IOCTL_NOTIF_SEND, &resp), 0) << std::strerror(errno);

  ASSERT_EQ(waitpid(pid, &reaper.status, 0), pid);
  ASSERT_TRUE(WIFEXITED(reaper.status)) << reaper.status;
  EXPECT_EQ(WEXITSTATUS(reaper.status), 77);
  std::filesystem::remove_all(dir);
}

TEST(SendSeccompListener, Errors) {
  try {
    send_seccomp_listener(0, "/nonexistent/racker/agent.sock", "{}");
    ADD_FAILURE() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()),
              "seccomp listener /nonexistent/racker/agent.sock: connect: No such file or "
              "directory");
    EXPECT_EQ(e.err(), ENOENT);
  }
  EXPECT_THROW(send_seccomp_listener(0, std::string(200, 'a'), "{}"), Error);
}

}  // namespace
}  // namespace racker::runtime
