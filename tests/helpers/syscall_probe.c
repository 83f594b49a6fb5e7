/* syscall_probe NAME...: makes each named system call once, with harmless arguments, and prints
 * "NAME errno" (0 when it succeeded, else the errno, e.g. "keyctl EPERM"). Built static by the
 * test build and bind-mounted into containers, to see from inside what a seccomp filter lets
 * through: busybox has no tools for most of these calls. Exits 0 unless a name is unknown. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

static const char* errno_name(int e) {
  switch (e) {
    case 0:
      return "0";
    case EPERM:
      return "EPERM";
    case ENOSYS:
      return "ENOSYS";
    case EINVAL:
      return "EINVAL";
    case EFAULT:
      return "EFAULT";
    case EBADF:
      return "EBADF";
    case ENOENT:
      return "ENOENT";
    case EACCES:
      return "EACCES";
    case EAFNOSUPPORT:
      return "EAFNOSUPPORT";
    case ENOSPC:
      return "ENOSPC";
    case EOPNOTSUPP:
      return "EOPNOTSUPP";
    case E2BIG:
      return "E2BIG";
    default:
      return NULL;
  }
}

static long probe(const char* name) {
  /* arguments chosen so that a call the filter lets through fails (or does nothing) without
   * side effects: a bad fd, a null pointer, an unknown command */
  if (!strcmp(name, "keyctl")) return syscall(SYS_keyctl, 0 /* KEYCTL_GET_KEYRING_ID */, -3, 0);
  if (!strcmp(name, "add_key"))
    return syscall(SYS_add_key, "", "racker-probe", "x", 1,
                   -3); /* no such key type: never adds one */
  if (!strcmp(name, "request_key"))
    return syscall(SYS_request_key, "user", "racker-probe", NULL, 0);
  if (!strcmp(name, "bpf")) return syscall(SYS_bpf, 0 /* BPF_MAP_CREATE */, NULL, 0);
  if (!strcmp(name, "perf_event_open")) return syscall(SYS_perf_event_open, NULL, 0, -1, -1, 0);
  if (!strcmp(name, "kexec_load")) return syscall(SYS_kexec_load, 0, 0, NULL, 0);
  if (!strcmp(name, "open_by_handle_at")) return syscall(SYS_open_by_handle_at, -1, NULL, 0);
  if (!strcmp(name, "userfaultfd")) return syscall(SYS_userfaultfd, 0);
  if (!strcmp(name, "unshare-user")) return syscall(SYS_unshare, CLONE_NEWUSER);
  if (!strcmp(name, "unshare-mount")) return syscall(SYS_unshare, CLONE_NEWNS);
  if (!strcmp(name, "clone3")) return syscall(SYS_clone3, NULL, 0);
  if (!strcmp(name, "mkdir")) return syscall(SYS_mkdir, "/tmp/racker-probe-dir", 0700);
  if (!strcmp(name, "getpid")) return syscall(SYS_getpid) > 0 ? 0 : -1;
  if (!strcmp(name, "socket-vsock")) return syscall(SYS_socket, 40 /* AF_VSOCK */, SOCK_STREAM, 0);
  if (!strcmp(name, "socket-audit"))
    return syscall(SYS_socket, AF_NETLINK, SOCK_RAW, 9 /* NETLINK_AUDIT */);
  if (!strcmp(name, "personality-bad"))
    return syscall(SYS_personality, 0x0400000 /* READ_IMPLIES_EXEC */);
  errno = ENOENT;
  return -2;
}

int main(int argc, char** argv) {
  int status = 0;
  for (int i = 1; i < argc; ++i) {
    errno = 0;
    long rc = probe(argv[i]);
    if (rc == -2 && errno == ENOENT) {
      printf("%s unknown\n", argv[i]);
      status = 2;
      continue;
    }
    int e = rc < 0 ? errno : 0;
    /* a call that succeeded returned a new fd (or nothing); the process ends soon anyway */
    const char* n = errno_name(e);
    if (n)
      printf("%s %s\n", argv[i], n);
    else
      printf("%s %d\n", argv[i], e);
  }
  fflush(stdout);
  return status;
}
