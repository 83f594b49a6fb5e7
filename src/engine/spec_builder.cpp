#include "engine/spec_builder.hpp"

#include <unistd.h>

#include <cerrno>
#include <cstdlib>

#include "base/error.hpp"
#include "base/strings.hpp"
#include "engine/rootless.hpp"
#include "oci/capabilities.hpp"
#include "oci/spec.hpp"

namespace racker::engine {

using nlohmann::json;

std::string find_init_binary() {
  for (const char* p :
       {"/usr/bin/tini-static", "/usr/libexec/docker/docker-init", "/usr/bin/docker-init",
        "/usr/libexec/podman/catatonit", "/usr/bin/catatonit"})
    if (::access(p, X_OK) == 0) return p;
  return "";
}

const std::vector<std::string>& default_capabilities() {
  static const std::vector<std::string> caps = {
      "CAP_CHOWN",   "CAP_DAC_OVERRIDE", "CAP_FSETID",           "CAP_FOWNER",
      "CAP_MKNOD",   "CAP_NET_RAW",      "CAP_SETGID",           "CAP_SETUID",
      "CAP_SETFCAP", "CAP_SETPCAP",      "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT",
      "CAP_KILL",    "CAP_AUDIT_WRITE"};
  return caps;
}

SeccompChoice effective_seccomp(const RunFlags& flags) {
  if (flags.privileged) return SeccompChoice::unconfined();
  return flags.seccomp;
}

int64_t parse_memory(const std::string& s) {
  if (s.empty()) throw Error("invalid memory size \"\"", EINVAL);
  std::string num = s;
  int64_t mult = 1;
  char unit = static_cast<char>(tolower(s.back()));
  if (unit == 'b') {
    num.pop_back();
    unit = num.empty() ? 0 : static_cast<char>(tolower(num.back()));
  }
  if (unit == 'k' || unit == 'm' || unit == 'g' || unit == 't') {
    num.pop_back();
    mult = unit == 'k' ? 1LL << 10 : unit == 'm' ? 1LL << 20 : unit == 'g' ? 1LL << 30 : 1LL << 40;
  }
  auto v = parse_int(num);
  if (!v || *v <= 0) throw Error("invalid memory size \"" + s + "\"", EINVAL);
  return *v * mult;
}

VolumeSpec parse_volume(const std::string& s) {
  auto parts = split(s, ':');
  if (parts.size() < 2 || parts.size() > 3 || parts[0].empty() || parts[1].empty())
    throw Error("invalid volume \"" + s + "\": use SRC:DST[:ro]", EINVAL);
  if (parts[0][0] != '/')
    throw Error("invalid volume \"" + s +
                    "\": named volumes are not supported, use an absolute "
                    "host path",
                EINVAL);
  if (parts[1][0] != '/')
    throw Error("invalid volume \"" + s + "\": destination must be absolute", EINVAL);
  VolumeSpec v{parts[0], parts[1], false};
  if (parts.size() == 3) {
    if (parts[2] == "ro")
      v.readonly = true;
    else if (parts[2] != "rw")
      throw Error("invalid volume \"" + s + "\": unknown mode \"" + parts[2] + "\"", EINVAL);
  }
  return v;
}

namespace {

std::vector<std::string> strings_of(const json& j) {
  std::vector<std::string> out;
  if (j.is_array())
    for (auto& e : j)
      if (e.is_string()) out.push_back(e.get<std::string>());
  return out;
}

void set_env(std::vector<std::string>& env, const std::string& kv) {
  std::string key = kv.substr(0, kv.find('='));
  std::erase_if(env, [&](const std::string& e) { return e.substr(0, e.find('=')) == key; });
  env.push_back(kv);
}

json cap_list(const std::vector<std::string>& caps) {
  return json(caps);
}

}  // namespace

BuiltSpec build_spec(const json& image_config, const RunFlags& f, const std::string& rootfs,
                     const std::string& id,
                     const std::vector<std::pair<std::string, std::string>>& extra_binds) {
  json cfg = image_config.contains("config") && image_config["config"].is_object()
                 ? image_config["config"]
                 : json::object();
  json spec = oci::example_spec(false);
  spec["ociVersion"] = "1.2.0";

  // args: docker's rules for Entrypoint and Cmd
  std::vector<std::string> entry =
      f.entrypoint ? *f.entrypoint : strings_of(cfg.value("Entrypoint", json()));
  std::vector<std::string> cmd = !f.args.empty() ? f.args
                                 : f.entrypoint  ? std::vector<std::string>{}
                                                 : strings_of(cfg.value("Cmd", json()));
  std::vector<std::string> args = entry;
  args.insert(args.end(), cmd.begin(), cmd.end());
  if (args.empty())
    throw Error("no command: the image has no Cmd or Entrypoint and none was given", EINVAL);

  std::vector<std::string> env = {
      "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"};
  for (auto& e : strings_of(cfg.value("Env", json())))
    // an image's "" or "=x" cannot be an environment entry (the runtime would refuse it)
    if (auto eq = e.find('='); eq != std::string::npos && eq > 0) set_env(env, e);
  if (f.tty) set_env(env, "TERM=xterm");
  std::string hostname = f.hostname.empty() ? id.substr(0, 12) : f.hostname;
  set_env(env, "HOSTNAME=" + hostname);
  for (auto& e : f.env) {
    if (e.find('=') != std::string::npos) {
      set_env(env, e);
    } else if (const char* v = std::getenv(e.c_str())) {
      set_env(env, e + "=" + v);
    }
  }

  auto& p = spec["process"];
  p["terminal"] = f.tty;
  p["args"] = args;
  if (f.init) {
    if (f.init_path.empty())
      throw Error("--init: no init binary on this host (apt-get install tini)", ENOENT);
    std::vector<std::string> with_init = {kInitPath, "--"};
    with_init.insert(with_init.end(), args.begin(), args.end());
    p["args"] = with_init;
  }
  p["env"] = env;
  std::string wd = !f.workdir.empty() ? f.workdir : cfg.value("WorkingDir", "");
  p["cwd"] = wd.empty() ? "/" : wd;
  if (p["cwd"].get<std::string>()[0] != '/')
    throw Error("working directory must be absolute: " + wd, EINVAL);
  p["noNewPrivileges"] = f.no_new_privileges;
  p.erase("rlimits");  // keep the caller's limits (the host may not allow raising them)

  std::vector<std::string> caps;
  if (f.privileged) {
    for (int c = 0; c <= oci::last_known_capability(); ++c) caps.push_back(oci::capability_name(c));
  } else {
    caps = default_capabilities();
  }
  // docker applies --cap-drop first, so "--cap-drop ALL --cap-add X" leaves just X
  for (auto& c : f.cap_drop) {
    std::string n = c.starts_with("CAP_") ? c : "CAP_" + c;
    for (auto& ch : n) ch = static_cast<char>(toupper(ch));
    if (n == "CAP_ALL") {
      caps.clear();
      continue;
    }
    if (!oci::capability_from_name(n)) throw Error("unknown capability \"" + c + "\"", EINVAL);
    std::erase(caps, n);
  }
  for (auto& c : f.cap_add) {
    std::string n = c.starts_with("CAP_") ? c : "CAP_" + c;
    for (auto& ch : n) ch = static_cast<char>(toupper(ch));
    if (n == "CAP_ALL") {
      caps.clear();
      for (int k = 0; k <= oci::last_known_capability(); ++k)
        caps.push_back(oci::capability_name(k));
      continue;
    }
    if (!oci::capability_from_name(n)) throw Error("unknown capability \"" + c + "\"", EINVAL);
    if (std::find(caps.begin(), caps.end(), n) == caps.end()) caps.push_back(n);
  }
  json cl = cap_list(caps);
  p["capabilities"] = {{"bounding", cl}, {"effective", cl}, {"permitted", cl}};
  p.erase("apparmorProfile");

  spec["root"] = {{"path", rootfs}, {"readonly", f.read_only}};
  spec["hostname"] = hostname;

  auto& mounts = spec["mounts"];
  for (auto& [src, dst] : extra_binds)
    mounts.push_back({{"destination", dst},
                      {"type", "bind"},
                      {"source", src},
                      {"options", {"rbind", "rprivate"}}});
  if (f.init)
    mounts.push_back({{"destination", kInitPath},
                      {"type", "bind"},
                      {"source", f.init_path},
                      {"options", {"bind", "rprivate", "ro", "nosuid", "nodev"}}});
  for (auto& v : f.volumes) {
    json opts = {"rbind", "rprivate"};
    if (v.readonly) opts.push_back("ro");
    mounts.push_back({{"destination", v.destination},
                      {"type", "bind"},
                      {"source", v.source},
                      {"options", opts}});
  }
  for (auto& t : f.tmpfs) {
    auto colon = t.find(':');
    std::string dst = t.substr(0, colon);
    if (dst.empty() || dst[0] != '/')
      throw Error("invalid --tmpfs \"" + t + "\": destination must be absolute", EINVAL);
    json opts = {"nosuid", "nodev"};
    if (colon != std::string::npos)
      for (auto& o : split(t.substr(colon + 1), ',')) opts.push_back(o);
    mounts.push_back(
        {{"destination", dst}, {"type", "tmpfs"}, {"source", "tmpfs"}, {"options", opts}});
  }
  if (f.privileged) {
    // docker's --privileged: writable sysfs and cgroups, no masked or read-only paths
    for (auto& m : mounts)
      if (m["destination"] == "/sys" || m["destination"] == "/sys/fs/cgroup") {
        json kept = json::array();
        for (auto& o : m["options"])
          if (o != "ro") kept.push_back(o);
        m["options"] = kept;
      }
  }

  auto& lx = spec["linux"];
  json ns = json::array();
  for (const char* t : {"pid", "ipc", "uts", "mount", "cgroup"}) ns.push_back({{"type", t}});
  if (f.network != "host") {
    if (f.network != "none" && f.network != "private")
      throw Error("unknown --network \"" + f.network + "\": use host, none or private", EINVAL);
    ns.push_back({{"type", "network"}});
  }
  lx["namespaces"] = ns;
  // an ordinary user's containers go below the cgroup delegated to the user, if any (else the
  // runtime finds /racker not writable and runs them without a cgroup)
  std::string base = f.systemd_cgroup || !rootless() ? "" : delegated_cgroup();
  lx["cgroupsPath"] = f.systemd_cgroup ? "machine.slice:racker:" + id : base + "/racker/" + id;
  if (f.privileged) {
    lx.erase("maskedPaths");
    lx.erase("readonlyPaths");
    lx["resources"] = {{"devices", {{{"allow", true}, {"access", "rwm"}}}}};
  } else {
    // docker's default device rules: the standard nodes plus pty and mknod of any device
    lx["resources"] = {
        {"devices",
         {{{"allow", false}, {"access", "rwm"}},
          {{"allow", true}, {"type", "c"}, {"major", 1}, {"minor", 3}, {"access", "rwm"}},
          {{"allow", true}, {"type", "c"}, {"major", 1}, {"minor", 5}, {"access", "rwm"}},
          {{"allow", true}, {"type", "c"}, {"major", 1}, {"minor", 7}, {"access", "rwm"}},
          {{"allow", true}, {"type", "c"}, {"major", 1}, {"minor", 8}, {"access", "rwm"}},
          {{"allow", true}, {"type", "c"}, {"major", 1}, {"minor", 9}, {"access", "rwm"}},
          {{"allow", true}, {"type", "c"}, {"major", 5}, {"minor", 0}, {"access", "rwm"}},
          {{"allow", true}, {"type", "c"}, {"major", 5}, {"minor", 1}, {"access", "rwm"}},
          {{"allow", true}, {"type", "c"}, {"major", 5}, {"minor", 2}, {"access", "rwm"}},
          {{"allow", true}, {"type", "c"}, {"major", 136}, {"access", "rwm"}}}}};
  }
  auto& res = lx["resources"];
  if (f.memory) res["memory"] = {{"limit", *f.memory}};
  if (f.cpus) {
    if (*f.cpus <= 0) throw Error("invalid --cpus: must be greater than 0", EINVAL);
    res["cpu"] = {{"period", 100000}, {"quota", static_cast<int64_t>(*f.cpus * 100000)}};
  }
  if (f.pids_limit) res["pids"] = {{"limit", *f.pids_limit}};
  // the profile for the capabilities chosen above
  apply_seccomp(spec, effective_seccomp(f), false);
  return {spec, args};
}

}  // namespace racker::engine
