"""Seccomp: racker's default profile (docker's semantics) for plain containers, the OS profile
for a booted system's init, --security-opt seccomp=unconfined|FILE and no-new-privileges,
--privileged, and bad profiles.

The probe is tests/helpers/syscall_probe.c ($RACKER_BUILD/syscall_probe, static), bind-mounted
into the container: it makes the system calls named on its command line and prints
"NAME ERRNO" for each. Plain containers use test_run.py's registry images; OS containers
test_boot.py's baked bookworm image (skipped without mmdebstrap).
"""

import json
import os
from pathlib import Path

import pytest

from racker_ctx import bb_rootfs  # noqa: F401
from test_run import ctx, images, one_line_error, racker_exe  # noqa: F401
from test_boot import IMAGE as OS_IMAGE, Boot, store  # noqa: F401

BUILD = Path(os.environ.get("RACKER_BUILD", Path(__file__).resolve().parents[2] / "build"))
PROBE = BUILD / "syscall_probe"
# what docker's default profile must refuse with EPERM in a plain container
REFUSED = ["keyctl", "add_key", "request_key", "bpf", "perf_event_open", "kexec_load",
           "open_by_handle_at", "userfaultfd", "unshare-user", "unshare-mount"]


@pytest.fixture(scope="module")
def probe():
    if not PROBE.is_file():
        pytest.skip(f"{PROBE} not built (ninja syscall_probe)")
    return str(PROBE)


def probe_results(out):
    return dict(line.split(" ", 1) for line in out.splitlines() if " " in line)


def seccomp_mode(text):
    return [l.split()[1] for l in text.splitlines() if l.startswith("Seccomp:")]


def test_default_profile_is_on(ctx):
    assert seccomp_mode(ctx.out("--rm", ctx.images.bb, "cat", "/proc/self/status")) == ["2"]


def test_default_refuses_dangerous_calls_with_eperm(ctx, probe):
    out = ctx.out("--rm", "-v", f"{probe}:/probe:ro", ctx.images.bb, "/probe", *REFUSED,
                  "clone3", "socket-vsock", "personality-bad", "getpid", "mkdir")
    got = probe_results(out)
    for name in REFUSED + ["socket-vsock", "personality-bad"]:
        assert got[name] == "EPERM", (name, out)
    assert got["clone3"] == "ENOSYS", out  # the C library falls back to clone
    assert got["getpid"] == "0" and got["mkdir"] == "0", out


def test_busybox_unshare_refused(ctx):
    r = ctx.run("--rm", ctx.images.bb, "unshare", "-U", "true")
    assert r.returncode != 0 and "Operation not permitted" in r.stderr, r


def test_unconfined_lifts_the_filter(ctx, probe):
    out = ctx.out("--rm", "--security-opt", "seccomp=unconfined", "-v", f"{probe}:/probe:ro",
                  ctx.images.bb, "sh", "-c", "grep Seccomp: /proc/self/status; /probe keyctl")
    assert seccomp_mode(out) == ["0"], out
    assert probe_results(out)["keyctl"] != "EPERM", out


def test_privileged_is_unconfined(ctx):
    assert seccomp_mode(ctx.out("--rm", "--privileged", ctx.images.bb, "cat",
                                "/proc/self/status")) == ["0"]


def test_cap_sys_admin_opens_its_group(ctx, probe):
    out = ctx.out("--rm", "--cap-add", "SYS_ADMIN", "-v", f"{probe}:/probe:ro", ctx.images.bb,
                  "/probe", "unshare-mount", "keyctl")
    got = probe_results(out)
    assert got["unshare-mount"] == "0", out  # CAP_SYS_ADMIN: unshare allowed
    assert got["keyctl"] == "EPERM", out  # never in the profile


def test_custom_profile_is_honoured(ctx, probe, tmp_path):
    prof = tmp_path / "profile.json"
    prof.write_text(json.dumps({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 28},
                     {"name": "getpid", "action": "SCMP_ACT_ERRNO", "errnoRet": 1,
                      "includes": {"caps": ["CAP_SYS_MODULE"]}}]}))
    out = ctx.out("--rm", "--security-opt", f"seccomp={prof}", "-v", f"{probe}:/probe:ro",
                  ctx.images.bb, "/probe", "mkdir", "getpid", "keyctl")
    got = probe_results(out)
    assert got["mkdir"] == "ENOSPC", out
    assert got["getpid"] == "0", out  # the rule needs a capability the container lacks
    assert got["keyctl"] != "EPERM", out  # the profile allows everything else


def test_no_new_privileges(ctx):
    out = ctx.out("--rm", "--security-opt", "no-new-privileges", ctx.images.bb, "cat",
                  "/proc/self/status")
    assert "NoNewPrivs:\t1" in out, out
    out = ctx.out("--rm", "--security-opt", "no-new-privileges=false", ctx.images.bb, "cat",
                  "/proc/self/status")
    assert "NoNewPrivs:\t0" in out, out


BAD_PROFILES = {
    "unknown action": ({"defaultAction": "SCMP_ACT_ALLOW",
                        "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_EXPLODE"}]},
                       "syscalls[0].action"),
    "wrong type": ({"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": "1"},
                   "defaultErrnoRet"),
    "bad op": ({"defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO",
                              "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_ABOUT"}]}]},
               "syscalls[0].args[0].op"),
    "unknown arch": ({"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_Z80"]},
                     "architectures[0]"),
    "index out of range": ({"defaultAction": "SCMP_ACT_ALLOW",
                            "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO",
                                          "args": [{"index": 6, "value": 1,
                                                    "op": "SCMP_CMP_EQ"}]}]},
                           "syscalls[0].args[0].index"),
    "not json": ("{\"defaultAction\": ", "invalid JSON"),
}


@pytest.mark.parametrize("case", sorted(BAD_PROFILES))
def test_bad_profile_one_line_and_nothing_left(ctx, tmp_path, case):
    body, field = BAD_PROFILES[case]
    prof = tmp_path / "bad.json"
    prof.write_text(body if isinstance(body, str) else json.dumps(body))
    r = ctx.run("--rm", "--name", "seccomp-bad", "--security-opt", f"seccomp={prof}",
                ctx.images.bb, "true")
    one_line_error(r, str(prof), field)
    assert ctx.container_ids() == [], "a container was made"
    r = ctx("create", "--security-opt", f"seccomp={prof}", ctx.images.bb, "true")
    one_line_error(r, str(prof), field)
    assert ctx.container_ids() == []


def test_missing_profile_and_unknown_option(ctx, tmp_path):
    one_line_error(ctx.run("--rm", "--security-opt", f"seccomp={tmp_path}/none.json",
                           ctx.images.bb, "true"), "none.json")
    one_line_error(ctx.run("--rm", "--security-opt", "apparmor=foo", ctx.images.bb, "true"),
                   "apparmor=foo")
    one_line_error(ctx.run("--rm", "--security-opt", "no-new-privileges=maybe", ctx.images.bb,
                           "true"), "no-new-privileges")
    assert ctx.container_ids() == []


def test_inspect_shows_profile(ctx, tmp_path):
    cid = ctx("create", ctx.images.bb, "true").stdout.strip()
    info = json.loads(ctx("inspect", cid).stdout)
    info = info[0] if isinstance(info, list) else info
    assert info["seccomp"]["profile"] == "default", info
    assert info["HostConfig"]["SecurityOpt"] == [], info
    cid2 = ctx("create", "--security-opt", "seccomp=unconfined", ctx.images.bb, "true")
    info = json.loads(ctx("inspect", cid2.stdout.strip()).stdout)
    info = info[0] if isinstance(info, list) else info
    assert info["seccomp"]["profile"] == "unconfined", info
    assert info["HostConfig"]["SecurityOpt"] == ["seccomp=unconfined"], info
    ctx("rm", "-f", cid, cid2.stdout.strip())


# --- OS containers -------------------------------------------------------------------------


@pytest.fixture
def boot(racker_exe, store):  # noqa: F811
    return Boot(racker_exe, store)


def test_os_container_init_and_command_filtered(boot, probe):
    script = ("grep Seccomp: /proc/self/status /proc/1/status; systemctl is-active "
              "systemd-journald; /probe " + " ".join(REFUSED) + "; echo SERVICE; "
              "systemd-run --wait --pipe -q /probe keyctl bpf open_by_handle_at userfaultfd "
              "kexec_load unshare-mount socket-audit")
    p = boot.run("sh", "-c", script, flags=("-v", f"{probe}:/probe:ro"))
    assert p.returncode == 0, p
    command, service = p.stdout.split("SERVICE\n")
    assert "/proc/self/status:Seccomp:\t2" in command, p
    assert "/proc/1/status:Seccomp:\t2" in command, p
    assert "active\n" in command, p
    got = probe_results(command)
    for name in REFUSED:  # the command gets docker's profile
        assert got[name] == "EPERM", (name, p.stdout)
    got = probe_results(service)  # a service gets the init's (nspawn's) profile
    for name in ("keyctl", "bpf", "open_by_handle_at", "userfaultfd", "kexec_load"):
        assert got[name] == "EPERM", (name, p.stdout)
    assert got["unshare-mount"] == "0", p.stdout  # PrivateTmp= and friends need it
    assert got["socket-audit"] == "EAFNOSUPPORT", p.stdout


def test_os_container_unconfined(boot):
    p = boot.run("grep", "Seccomp:", "/proc/self/status", "/proc/1/status",
                 flags=("--security-opt", "seccomp=unconfined"))
    assert p.returncode == 0, p
    assert p.stdout.count("Seccomp:\t0") == 2, p
