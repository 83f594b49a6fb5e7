"""Bad input: each failure is one exact line on stderr ("racker-oci: <message>"), exit status
1, and nothing is left behind (no state directory, no container listed, no mount, no cgroup,
no process)."""

import json
import os

import pytest

from conftest import cgroup_dirs_named, mounts_under, processes_mentioning


def assert_fails_cleanly(racker, bundle, message, verb="create", cid=None):
    cid = cid or racker.new_id()
    r = racker(verb, "--bundle", bundle.path, cid)
    assert (r.returncode, r.stderr) == (1, f"racker-oci: {message}\n"), r
    assert r.stdout == ""
    assert not (racker.root / cid).exists(), "state directory left"
    assert racker.list_ids() == []
    assert mounts_under(bundle.path) == []
    assert cgroup_dirs_named(cid) == []
    assert processes_mentioning(str(bundle.path)) == []
    return r


def ns_index(c, ns_type):
    return [n["type"] for n in c["linux"]["namespaces"]].index(ns_type)


# Each case: (id, edit(config, bundle), expected message; "{bundle}" is the bundle's path,
# "{M}" the index of a mount appended by the edit, "{N}" that of an appended namespace).
def add_mount(m):
    def edit(c, b):
        c["mounts"].append(m)
    return edit


def set_in(path, value):
    def edit(c, b):
        node = c
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
    return edit


def delete_in(path):
    def edit(c, b):
        node = c
        for key in path[:-1]:
            node = node[key]
        del node[path[-1]]
    return edit


CASES = [
    ("args-string", set_in(["process", "args"], "sh -c true"),
     "config.json: process.args: expected an array of strings, got string"),
    ("args-element-int", set_in(["process", "args"], ["sh", 1]),
     "config.json: process.args[1]: expected a string, got integer"),
    ("args-empty", set_in(["process", "args"], []),
     "config.json: process.args: must not be empty"),
    ("terminal-string", set_in(["process", "terminal"], "yes"),
     "config.json: process.terminal: expected a boolean, got string"),
    ("uid-string", set_in(["process", "user", "uid"], "0"),
     "config.json: process.user.uid: expected an integer, got string"),
    ("uid-negative", set_in(["process", "user", "uid"], -1),
     "config.json: process.user.uid: expected a non-negative integer, got -1"),
    ("root-not-object", set_in(["root"], "rootfs"),
     "config.json: root: expected an object, got string"),
    ("root-path-leaves-bundle", set_in(["root", "path"], "../outside"),
     'config.json: root.path: relative path "../outside" leaves the bundle'),
    ("root-path-leaves-bundle-2", set_in(["root", "path"], "rootfs/../../outside"),
     'config.json: root.path: relative path "rootfs/../../outside" leaves the bundle'),
    ("root-missing", set_in(["root", "path"], "nope"),
     'config.json: root.path: rootfs "{bundle}/nope" does not exist'),
    ("root-is-file", set_in(["root", "path"], "config.json"),
     'config.json: root.path: rootfs "{bundle}/config.json" is not a directory'),
    ("no-root", delete_in(["root"]), "config.json: root: required"),
    ("no-process", delete_in(["process"]), "config.json: process: required"),
    ("no-oci-version", delete_in(["ociVersion"]), "config.json: ociVersion: required"),
    ("oci-version-2", set_in(["ociVersion"], "2.0.0"),
     'config.json: ociVersion: unsupported version "2.0.0"'),
    ("no-cwd", delete_in(["process", "cwd"]), "config.json: process.cwd: required"),
    ("cwd-relative", set_in(["process", "cwd"], "tmp"),
     'config.json: process.cwd: must be absolute, got "tmp"'),
    ("env-without-equals", set_in(["process", "env"], ["PATH=/bin", "FOO"]),
     'config.json: process.env[1]: expected KEY=VALUE, got "FOO"'),
    ("unknown-capability",
     set_in(["process", "capabilities", "bounding"], ["CAP_KILL", "CAP_BOGUS"]),
     'config.json: process.capabilities.bounding[1]: unknown capability "CAP_BOGUS"'),
    ("unknown-rlimit", set_in(["process", "rlimits"], [{"type": "RLIMIT_BOGUS", "soft": 1,
                                                         "hard": 1}]),
     'config.json: process.rlimits[0].type: unknown rlimit "RLIMIT_BOGUS"'),
    ("rlimit-soft-above-hard", set_in(["process", "rlimits"], [{"type": "RLIMIT_NOFILE",
                                                                 "soft": 10, "hard": 5}]),
     "config.json: process.rlimits[0].soft: soft limit exceeds hard limit"),
    ("oom-score-adj-range", set_in(["process", "oomScoreAdj"], 1001),
     "config.json: process.oomScoreAdj: must be -1000..1000"),
    ("unknown-namespace",
     lambda c, b: c["linux"]["namespaces"].append({"type": "bogus"}),
     'config.json: linux.namespaces[{N}].type: unknown namespace type "bogus"'),
    ("duplicate-namespace",
     lambda c, b: c["linux"]["namespaces"].append({"type": "pid"}),
     'config.json: linux.namespaces[{N}].type: duplicate namespace "pid"'),
    ("namespace-path-missing",
     lambda c, b: c["linux"]["namespaces"].__setitem__(
         ns_index(c, "network"), {"type": "network", "path": "/proc/999999999/ns/net"}),
     'config.json: linux.namespaces[1].path: namespace "/proc/999999999/ns/net" does not exist'),
    ("mount-unknown-option",
     add_mount({"destination": "/x", "type": "tmpfs", "source": "tmpfs",
                "options": ["nosuid", "bogus"]}),
     'config.json: mounts[{M}].options[1]: unknown mount option "bogus"'),
    ("mount-relative-destination",
     add_mount({"destination": "data", "type": "tmpfs", "source": "tmpfs"}),
     'config.json: mounts[{M}].destination: must be absolute, got "data"'),
    ("bind-without-source", add_mount({"destination": "/data", "type": "bind",
                                       "options": ["rbind"]}),
     "config.json: mounts[{M}].source: required for a bind mount"),
    ("hostname-without-uts",
     lambda c, b: c["linux"]["namespaces"].pop(ns_index(c, "uts")),
     "config.json: hostname: setting the hostname needs a uts namespace"),
    ("sysctl-not-namespaced", set_in(["linux", "sysctl"], {"vm.swappiness": "10"}),
     "config.json: linux.sysctl.vm.swappiness: not a namespaced sysctl: it would change the host"),
    ("sysctl-net-without-netns",
     lambda c, b: (c["linux"].update(sysctl={"net.ipv4.ip_forward": "1"}),
                   c["linux"]["namespaces"].pop(ns_index(c, "network"))),
     "config.json: linux.sysctl.net.ipv4.ip_forward: needs a network namespace"),
    ("mappings-without-userns",
     set_in(["linux", "uidMappings"], [{"containerID": 0, "hostID": 1000, "size": 1}]),
     "config.json: linux.uidMappings: mappings given without a user namespace"),
    ("userns-without-mappings",
     lambda c, b: c["linux"]["namespaces"].append({"type": "user"}),
     "config.json: linux.uidMappings: a new user namespace needs uidMappings and gidMappings"),
    ("device-bad-type",
     set_in(["linux", "devices"], [{"path": "/dev/x", "type": "x", "major": 1, "minor": 3}]),
     'config.json: linux.devices[0].type: unknown device type "x"'),
    ("hook-relative-path", set_in(["hooks", "prestart"], [{"path": "hook.sh"}]),
     'config.json: hooks.prestart[0].path: must be absolute, got "hook.sh"'),
    ("memory-swappiness", set_in(["linux", "resources", "memory"], {"swappiness": 200}),
     "config.json: linux.resources.memory.swappiness: must be 0..100, got 200"),
    ("seccomp-bad-action",
     set_in(["linux", "seccomp"], {"defaultAction": "SCMP_ACT_ALLOW",
                                   "syscalls": [{"names": ["mkdir"],
                                                 "action": "SCMP_ACT_BOGUS"}]}),
     'config.json: linux.seccomp.syscalls[0].action: unknown action "SCMP_ACT_BOGUS"'),
    ("seccomp-bad-default-action",
     set_in(["linux", "seccomp"], {"defaultAction": "ALLOW"}),
     'config.json: linux.seccomp.defaultAction: unknown action "ALLOW"'),
    ("seccomp-no-default-action",
     set_in(["linux", "seccomp"], {"syscalls": []}),
     "config.json: linux.seccomp.defaultAction: required"),
    ("seccomp-bad-arch",
     set_in(["linux", "seccomp"], {"defaultAction": "SCMP_ACT_ALLOW",
                                   "architectures": ["SCMP_ARCH_Z80"]}),
     'config.json: linux.seccomp.architectures[0]: unknown architecture "SCMP_ARCH_Z80"'),
    ("windows-section", set_in(["windows"], {}), "config.json: windows: not supported on linux"),
]


@pytest.mark.parametrize("edit,message", [pytest.param(e, m, id=i) for i, e, m in CASES])
def test_bad_config(racker, make_bundle, edit, message):
    b = make_bundle(["true"])
    m_index = len(b.config["mounts"])
    n_index = len(b.config["linux"]["namespaces"])
    edit(b.config, b)
    b.write()
    message = message.format(bundle=b.path, M=m_index, N=n_index)
    assert_fails_cleanly(racker, b, message)


@pytest.mark.parametrize("verb", ["create", "run"])
def test_bad_config_also_for_run(racker, make_bundle, verb):
    b = make_bundle(["true"], edit=lambda c: c["process"].update(args="true"))
    assert_fails_cleanly(racker, b,
                         "config.json: process.args: expected an array of strings, got string",
                         verb=verb)


@pytest.mark.parametrize("text,message", [
    ('{"ociVersion": "1.2.0",', "config.json: invalid JSON: parse error at line 1, column 24: "
     "syntax error while parsing object key - unexpected end of input; expected string literal"),
    ("", "config.json: invalid JSON: parse error at line 1, column 1: syntax error while parsing "
     "value - unexpected end of input; expected '[', '{', or a literal"),
    ("[]", "config.json: (top level): expected an object, got array"),
    ("{'a': 1}", "config.json: invalid JSON: parse error at line 1, column 2: syntax error while "
     "parsing object key - invalid literal; last read: '{''; expected string literal"),
    ('{"ociVersion": "1.2.0", "process": {"user": {"uid": 1e400}}}',
     "config.json: invalid JSON: number overflow parsing '1e400'"),
], ids=["truncated", "empty", "array", "single-quotes", "number-overflow"])
def test_malformed_json(racker, make_bundle, text, message):
    b = make_bundle(["true"])
    (b.path / "config.json").write_text(text)
    assert_fails_cleanly(racker, b, message)


def test_missing_config_json(racker, make_bundle):
    b = make_bundle(["true"])
    (b.path / "config.json").unlink()
    assert_fails_cleanly(racker, b, f"open {b.path}/config.json: no such file or directory")


def test_missing_bundle(racker, tmp_path):
    cid = racker.new_id()
    r = racker("create", "--bundle", tmp_path / "nope", cid)
    assert (r.returncode, r.stderr) == (
        1, f'racker-oci: bundle "{tmp_path}/nope": No such file or directory\n'), r
    assert racker.list_ids() == []


# --- failures found inside the container init: still nothing left --------------------------


def test_executable_not_found(racker, make_bundle):
    b = make_bundle(["no-such-command"])
    assert_fails_cleanly(racker, b, 'exec: "no-such-command": executable file not found in $PATH')


def test_executable_path_missing(racker, make_bundle):
    b = make_bundle(["/no/such/file"])
    assert_fails_cleanly(racker, b,
                         'exec: "/no/such/file": stat /no/such/file: No such file or directory')


def test_cwd_missing_in_rootfs(racker, make_bundle):
    b = make_bundle(["true"], edit=lambda c: c["process"].update(cwd="/no/such/dir"))
    assert_fails_cleanly(racker, b, 'chdir to cwd ("/no/such/dir") set in config.json failed: '
                                    "No such file or directory")


def test_bind_source_missing(racker, make_bundle, tmp_path):
    b = make_bundle(["true"])
    m = len(b.config["mounts"])
    b.edit(lambda c: c["mounts"].append({"destination": "/data", "type": "bind",
                                         "source": str(tmp_path / "nope"),
                                         "options": ["rbind"]}))
    assert_fails_cleanly(racker, b, f"mounts[{m}] (/data): stat bind source {tmp_path}/nope: "
                                    "No such file or directory")


def test_rlimit_above_nr_open(racker, make_bundle):
    with open("/proc/sys/fs/nr_open") as f:
        too_many = int(f.read()) * 2
    b = make_bundle(["true"], edit=lambda c: c["process"].update(
        rlimits=[{"type": "RLIMIT_NOFILE", "soft": too_many, "hard": too_many}]))
    assert_fails_cleanly(racker, b, f"setrlimit RLIMIT_NOFILE soft={too_many} hard={too_many}: "
                                    "Operation not permitted")


# --- command line ----------------------------------------------------------------------------


def test_duplicate_id(racker, make_bundle):
    b = make_bundle(["sleep", "30"])
    cid, _ = racker.create(b)
    st = racker.state(cid)
    b2 = make_bundle(["true"])
    r = racker("create", "--bundle", b2.path, cid)
    assert (r.returncode, r.stderr) == (1, f'racker-oci: container "{cid}" already exists\n'), r
    assert racker.state(cid) == st  # the first one is untouched
    assert racker.list_ids() == [cid]
    assert mounts_under(b2.path) == []
    assert processes_mentioning(str(b2.path)) == []
    r = racker("run", "--bundle", b2.path, cid)
    assert (r.returncode, r.stderr) == (1, f'racker-oci: container "{cid}" already exists\n'), r
    assert racker.state(cid) == st


@pytest.mark.parametrize("cid,message", [
    ("bad/id", 'invalid container id "bad/id": only [A-Za-z0-9_+.-] allowed'),
    ("..", 'invalid container id ".."'),
    ("a b", 'invalid container id "a b": only [A-Za-z0-9_+.-] allowed'),
    ("", "container id must not be empty"),
], ids=["slash", "dotdot", "space", "empty"])
def test_invalid_container_id(racker, make_bundle, cid, message):
    b = make_bundle(["true"])
    for verb in ("create", "run"):
        r = racker(verb, "--bundle", b.path, cid)
        assert (r.returncode, r.stderr) == (1, f"racker-oci: {message}\n"), r
    for verb in ("state", "delete", "start", "kill"):
        r = racker(verb, cid)
        assert (r.returncode, r.stderr) == (1, f"racker-oci: {message}\n"), (verb, r)
    assert racker.list_ids() == []
    assert mounts_under(b.path) == []
    if racker.root.exists():
        assert os.listdir(racker.root) == []


@pytest.mark.parametrize("sig,message", [
    ("BOGUS", 'unknown signal "BOGUS"'),
    ("SIGBOGUS", 'unknown signal "SIGBOGUS"'),
    ("99", 'invalid signal "99"'),
    ("-1", 'invalid signal "-1"'),
    ("0", 'invalid signal "0"'),
])
def test_kill_bad_signal(racker, make_bundle, sig, message):
    b = make_bundle(["sleep", "30"])
    cid, _ = racker.create(b)
    racker.ok("start", cid)
    r = racker("kill", cid, sig)
    assert (r.returncode, r.stderr) == (1, f"racker-oci: {message}\n"), r
    assert racker.status(cid) == "running"


@pytest.mark.parametrize("args,message", [
    (["create", "--bogus", "x"], "unknown option --bogus"),
    (["create", "--bogus=1", "x"], "unknown option --bogus"),
    (["--bogus", "list"], "unknown option --bogus"),
    (["list", "-z"], "unknown option -z"),
    (["delete", "--all", "x"], "unknown option --all"),
    (["create", "--bundle"], "option --bundle needs a value"),
    (["--log-format", "xml", "list"], 'invalid --log-format "xml": use text or json'),
    (["list", "--format", "yaml"], 'invalid --format "yaml": use table or json'),
    (["create", "--preserve-fds", "abc", "x"], 'invalid --preserve-fds "abc"'),
    (["create", "--preserve-fds", "-1", "x"], 'invalid --preserve-fds "-1"'),
    (["start"], "start: missing <container-id> (see racker-oci start --help)"),
    (["state", "a", "b"], 'state: unexpected argument "b"'),
    (["exec", "x"], "exec: no command given (args or --process)"),
], ids=lambda v: v if isinstance(v, str) else " ".join(v))
def test_bad_command_line(racker, args, message):
    r = racker(*args)
    assert (r.returncode, r.stderr) == (1, f"racker-oci: {message}\n"), r
    assert r.stdout == ""
    assert not racker.root.exists() or os.listdir(racker.root) == []


@pytest.mark.parametrize("value", ["abc", "-1"])
def test_exec_bad_preserve_fds(racker, make_bundle, value):
    # as for create: a bad value is an error, not 0 (and -1 must not close the payload's stderr)
    b = make_bundle(["sleep", "30"])
    cid, _ = racker.create(b)
    racker.ok("start", cid)
    r = racker("exec", "--preserve-fds", value, cid, "sh", "-c", "echo to-stderr >&2")
    assert (r.returncode, r.stderr) == (1, f'racker-oci: invalid --preserve-fds "{value}"\n'), r
    assert racker.status(cid) == "running"


def test_exec_bad_process_json(racker, make_bundle, tmp_path):
    b = make_bundle(["sleep", "30"])
    cid, _ = racker.create(b)
    racker.ok("start", cid)
    pf = tmp_path / "p.json"
    pf.write_text(json.dumps({"args": "sh", "cwd": "/"}))
    r = racker("exec", "--process", pf, cid)
    assert (r.returncode, r.stderr) == (
        1, f"racker-oci: {pf}: process.args: expected an array of strings, got string\n"), r
    pf.write_text("{")
    r = racker("exec", "--process", pf, cid)
    assert (r.returncode, r.stderr) == (
        1, f"racker-oci: {pf}: invalid JSON: parse error at line 1, column 2: syntax error "
        "while parsing object key - unexpected end of input; expected string literal\n"), r
    pf.write_text('{"args": ["true"], "cwd": "/", "user": {"uid": 1e999}}')
    r = racker("exec", "--process", pf, cid)
    assert (r.returncode, r.stderr) == (
        1, f"racker-oci: {pf}: invalid JSON: number overflow parsing '1e999'\n"), r
    r = racker("exec", "--user", "x:y", cid, "true")
    assert (r.returncode, r.stderr) == (1, 'racker-oci: invalid --user "x:y": use uid[:gid]\n'), r
    r = racker("exec", "--env", "NOEQUALS", cid, "true")
    assert (r.returncode, r.stderr) == (1, 'racker-oci: invalid --env "NOEQUALS"\n'), r
    r = racker("exec", "--cap", "CAP_BOGUS", cid, "true")
    assert (r.returncode, r.stderr) == (1, 'racker-oci: unknown capability "CAP_BOGUS"\n'), r
    assert racker.status(cid) == "running"
    assert len(json.loads(racker.ok("ps", "--format", "json", cid).stdout)) == 1
