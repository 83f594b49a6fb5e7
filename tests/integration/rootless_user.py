"""An ordinary user for the rootless tests, made by root once per machine: a home, and
subordinate id ranges in /etc/subuid and /etc/subgid (as `useradd` gives every new user on
Debian). Commands run as that user with its own environment: no capabilities, no groups but
its own, HOME and XDG_RUNTIME_DIR of its own."""

import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

NAME = "racker-rootless"
RANGE_SIZE = 65536


def subid_range(path, name):
    """(start, count) of name's first entry in /etc/subuid or /etc/subgid, else None."""
    try:
        for line in Path(path).read_text().splitlines():
            f = line.strip().split(":")
            if len(f) == 3 and f[0] == name:
                return int(f[1]), int(f[2])
    except FileNotFoundError:
        pass
    return None


def _free_base():
    """A base no entry of /etc/subuid or /etc/subgid overlaps (below the 2^31 podman uses)."""
    taken = []
    for path in ("/etc/subuid", "/etc/subgid"):
        if os.path.exists(path):
            for line in Path(path).read_text().splitlines():
                f = line.strip().split(":")
                if len(f) == 3 and f[1].isdigit() and f[2].isdigit():
                    taken.append((int(f[1]), int(f[1]) + int(f[2])))
    base = 300000
    while any(a < base + RANGE_SIZE and base < b for a, b in taken):
        base += RANGE_SIZE
    return base


class User:
    def __init__(self):
        pw = pwd.getpwnam(NAME)
        self.name, self.uid, self.gid, self.home = NAME, pw.pw_uid, pw.pw_gid, pw.pw_dir
        self.subuid = subid_range("/etc/subuid", NAME)
        self.subgid = subid_range("/etc/subgid", NAME)

    def env(self, runtime_dir, **extra):
        env = {"HOME": self.home, "USER": self.name, "LOGNAME": self.name,
               "PATH": "/usr/local/bin:/usr/bin:/bin", "XDG_RUNTIME_DIR": str(runtime_dir)}
        env.update(extra)
        return {k: v for k, v in env.items() if v is not None}

    def run(self, argv, env, timeout=30, cgroups=(), **kw):
        """argv as this user (uid, gid, no supplementary groups); text output captured. With
        cgroups (directories), root first moves the process into each, as systemd puts a
        user's processes into the cgroup it delegated to the user."""
        argv = [str(a) for a in argv]
        if cgroups:
            script = ('for d in ' + " ".join(f"'{c}'" for c in cgroups) + '; do '
                      'echo $$ > "$d/cgroup.procs" || exit 99; done; '
                      f'exec setpriv --reuid={self.uid} --regid={self.gid} --clear-groups '
                      '-- "$@"')
            return subprocess.run(["sh", "-c", script, "sh", *argv], env=env,
                                  capture_output=True, text=True, timeout=timeout, cwd="/",
                                  **kw)
        return subprocess.run(argv, env=env, user=self.uid, group=self.gid,
                              extra_groups=[], capture_output=True, text=True, timeout=timeout,
                              cwd="/", **kw)

    def chown(self, path):
        subprocess.run(["chown", "-R", f"{self.uid}:{self.gid}", str(path)], check=True)

    def private_dir(self, prefix):
        """A fresh directory of the user's (0700) under /tmp."""
        d = Path(tempfile.mkdtemp(prefix=prefix))
        os.chown(d, self.uid, self.gid)
        return d


def ensure_user():
    """The test user, made if absent (with subordinate ranges); skips without root or the
    tools to make it."""
    if os.geteuid() != 0:
        pytest.skip("the rootless tests make their user as root")
    for tool in ("useradd", "usermod"):
        if not shutil.which(tool):
            pytest.skip(f"{tool} is missing (passwd)")
    try:
        pwd.getpwnam(NAME)
    except KeyError:
        subprocess.run(["useradd", "--create-home", "--shell", "/bin/sh", NAME], check=True,
                       capture_output=True)
    if subid_range("/etc/subuid", NAME) is None or subid_range("/etc/subgid", NAME) is None:
        base = _free_base()
        ids = f"{base}-{base + RANGE_SIZE - 1}"
        subprocess.run(["usermod", "--add-subuids", ids, "--add-subgids", ids, NAME], check=True,
                       capture_output=True)
    return User()
