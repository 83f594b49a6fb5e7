#include "oci/spec.hpp"

#include <sys/resource.h>

#include <limits>

#include "base/error.hpp"
#include "base/fs.hpp"
#include "base/strings.hpp"
#include "oci/capabilities.hpp"

namespace racker::oci {

using nlohmann::json;

namespace {

const char* type_name(const json& j) {
  switch (j.type()) {
    case json::value_t::null:
      return "null";
    case json::value_t::object:
      return "object";
    case json::value_t::array:
      return "array";
    case json::value_t::string:
      return "string";
    case json::value_t::boolean:
      return "boolean";
    case json::value_t::number_integer:
    case json::value_t::number_unsigned:
      return "integer";
    case json::value_t::number_float:
      return "number";
    default:
      return "value";
  }
}

[[noreturn]] void fail(const std::string& where, const std::string& what) {
  throw Error("config.json: " + where + ": " + what, EINVAL);
}

[[noreturn]] void wrong_type(const std::string& where, const char* want, const json& got) {
  fail(where, std::string("expected ") + want + ", got " + type_name(got));
}

// A view on one JSON object that names fields by their path in errors.
class Obj {
 public:
  Obj(const json& j, std::string where) : j_(j), where_(std::move(where)) {
    if (!j_.is_object()) wrong_type(where_.empty() ? "(top level)" : where_, "an object", j_);
  }

  std::string at(const std::string& key) const { return where_.empty() ? key : where_ + "." + key; }

  const json* get(const std::string& key) const {
    auto it = j_.find(key);
    if (it == j_.end() || it->is_null()) return nullptr;
    return &*it;
  }

  std::optional<std::string> str(const std::string& key) const {
    const json* v = get(key);
    if (!v) return std::nullopt;
    if (!v->is_string()) wrong_type(at(key), "a string", *v);
    return v->get<std::string>();
  }

  std::optional<bool> boolean(const std::string& key) const {
    const json* v = get(key);
    if (!v) return std::nullopt;
    if (!v->is_boolean()) wrong_type(at(key), "a boolean", *v);
    return v->get<bool>();
  }

  std::optional<int64_t> int64(const std::string& key) const {
    const json* v = get(key);
    if (!v) return std::nullopt;
    if (v->is_number_unsigned()) {
      if (v->get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
        fail(at(key), "value out of range");
      return static_cast<int64_t>(v->get<uint64_t>());
    }
    if (!v->is_number_integer()) wrong_type(at(key), "an integer", *v);
    return v->get<int64_t>();
  }

  std::optional<uint64_t> uint64(const std::string& key) const {
    const json* v = get(key);
    if (!v) return std::nullopt;
    if (v->is_number_unsigned()) return v->get<uint64_t>();
    if (v->is_number_integer()) {
      if (v->get<int64_t>() < 0)
        fail(at(key), "expected a non-negative integer, got " + std::to_string(v->get<int64_t>()));
      return static_cast<uint64_t>(v->get<int64_t>());
    }
    wrong_type(at(key), "an integer", *v);
  }

  template <typename T>
  std::optional<T> uint_as(const std::string& key) const {
    auto v = uint64(key);
    if (!v) return std::nullopt;
    if (*v > std::numeric_limits<T>::max())
      fail(at(key), "value " + std::to_string(*v) + " out of range");
    return static_cast<T>(*v);
  }

  std::vector<std::string> strings(const std::string& key) const {
    std::vector<std::string> out;
    const json* v = get(key);
    if (!v) return out;
    if (!v->is_array()) wrong_type(at(key), "an array of strings", *v);
    for (size_t i = 0; i < v->size(); ++i) {
      const json& e = (*v)[i];
      if (!e.is_string()) wrong_type(at(key) + "[" + std::to_string(i) + "]", "a string", e);
      out.push_back(e.get<std::string>());
    }
    return out;
  }

  // Calls fn(element, path) for each element of an array field.
  template <typename Fn>
  void each(const std::string& key, Fn fn) const {
    const json* v = get(key);
    if (!v) return;
    if (!v->is_array()) wrong_type(at(key), "an array", *v);
    for (size_t i = 0; i < v->size(); ++i) fn((*v)[i], at(key) + "[" + std::to_string(i) + "]");
  }

  std::optional<Obj> obj(const std::string& key) const {
    const json* v = get(key);
    if (!v) return std::nullopt;
    return Obj(*v, at(key));
  }

  std::map<std::string, std::string> string_map(const std::string& key) const {
    std::map<std::string, std::string> out;
    const json* v = get(key);
    if (!v) return out;
    if (!v->is_object()) wrong_type(at(key), "an object", *v);
    for (auto& [k, val] : v->items()) {
      if (!val.is_string()) wrong_type(at(key) + "." + k, "a string", val);
      out[k] = val.get<std::string>();
    }
    return out;
  }

  const std::string& where() const { return where_; }

 private:
  const json& j_;
  std::string where_;
};

std::vector<IdMapping> parse_mappings(const Obj& o, const std::string& key) {
  std::vector<IdMapping> out;
  o.each(key, [&](const json& e, const std::string& w) {
    Obj m(e, w);
    IdMapping im;
    im.container_id = m.uint_as<uint32_t>("containerID").value_or(0);
    im.host_id = m.uint_as<uint32_t>("hostID").value_or(0);
    auto size = m.uint_as<uint32_t>("size");
    if (!size || *size == 0) fail(m.at("size"), "must be a positive integer");
    im.size = *size;
    out.push_back(im);
  });
  return out;
}

std::vector<int> parse_cap_list(const Obj& o, const std::string& key) {
  std::vector<int> out;
  auto names = o.strings(key);
  for (size_t i = 0; i < names.size(); ++i) {
    auto cap = capability_from_name(names[i]);
    if (!cap)
      fail(o.at(key) + "[" + std::to_string(i) + "]", "unknown capability \"" + names[i] + "\"");
    out.push_back(*cap);
  }
  return out;
}

Hook parse_hook(const json& j, const std::string& w) {
  Obj o(j, w);
  Hook h;
  auto path = o.str("path");
  if (!path || path->empty()) fail(o.at("path"), "required");
  if ((*path)[0] != '/') fail(o.at("path"), "must be absolute, got \"" + *path + "\"");
  h.path = *path;
  h.args = o.strings("args");
  h.env = o.strings("env");
  if (auto t = o.int64("timeout")) {
    if (*t <= 0) fail(o.at("timeout"), "must be greater than zero, got " + std::to_string(*t));
    h.timeout = static_cast<int>(*t);
  }
  return h;
}

Resources parse_resources(const Obj& r) {
  Resources res;
  r.each("devices", [&](const json& e, const std::string& w) {
    Obj d(e, w);
    DeviceRule rule;
    auto allow = d.boolean("allow");
    if (!allow) fail(d.at("allow"), "required");
    rule.allow = *allow;
    std::string type = d.str("type").value_or("a");
    if (type != "a" && type != "b" && type != "c")
      fail(d.at("type"), "unknown device type \"" + type + "\"");
    rule.type = type[0];
    rule.major = d.int64("major");
    rule.minor = d.int64("minor");
    rule.access = d.str("access").value_or("rwm");
    for (char c : rule.access)
      if (c != 'r' && c != 'w' && c != 'm')
        fail(d.at("access"), "invalid access \"" + rule.access + "\"");
    res.devices.push_back(rule);
  });
  if (auto m = r.obj("memory")) {
    MemoryResources mem;
    mem.limit = m->int64("limit");
    mem.reservation = m->int64("reservation");
    mem.swap = m->int64("swap");
    mem.kernel = m->int64("kernel");
    mem.kernel_tcp = m->int64("kernelTCP");
    mem.swappiness = m->uint64("swappiness");
    if (mem.swappiness && *mem.swappiness > 100)
      fail(m->at("swappiness"), "must be 0..100, got " + std::to_string(*mem.swappiness));
    mem.disable_oom_killer = m->boolean("disableOOMKiller");
    mem.use_hierarchy = m->boolean("useHierarchy");
    mem.check_before_update = m->boolean("checkBeforeUpdate");
    res.memory = mem;
  }
  if (auto c = r.obj("cpu")) {
    CpuResources cpu;
    cpu.shares = c->uint64("shares");
    cpu.quota = c->int64("quota");
    cpu.burst = c->uint64("burst");
    cpu.period = c->uint64("period");
    cpu.realtime_runtime = c->int64("realtimeRuntime");
    cpu.realtime_period = c->uint64("realtimePeriod");
    cpu.cpus = c->str("cpus").value_or("");
    cpu.mems = c->str("mems").value_or("");
    cpu.idle = c->int64("idle");
    res.cpu = cpu;
  }
  if (auto p = r.obj("pids")) {
    res.pids_limit = p->int64("limit");
    if (!res.pids_limit) fail(p->at("limit"), "required");
  }
  if (auto b = r.obj("blockIO")) {
    BlockIoResources bio;
    bio.weight = b->uint_as<uint16_t>("weight");
    bio.leaf_weight = b->uint_as<uint16_t>("leafWeight");
    b->each("weightDevice", [&](const json& e, const std::string& w) {
      Obj d(e, w);
      WeightDevice wd;
      wd.major = d.int64("major").value_or(0);
      wd.minor = d.int64("minor").value_or(0);
      wd.weight = d.uint_as<uint16_t>("weight");
      wd.leaf_weight = d.uint_as<uint16_t>("leafWeight");
      bio.weight_device.push_back(wd);
    });
    auto throttle = [&](const char* key, std::vector<ThrottleDevice>& out) {
      b->each(key, [&](const json& e, const std::string& w) {
        Obj d(e, w);
        ThrottleDevice td;
        td.major = d.int64("major").value_or(0);
        td.minor = d.int64("minor").value_or(0);
        td.rate = d.uint64("rate").value_or(0);
        out.push_back(td);
      });
    };
    throttle("throttleReadBpsDevice", bio.throttle_read_bps);
    throttle("throttleWriteBpsDevice", bio.throttle_write_bps);
    throttle("throttleReadIOPSDevice", bio.throttle_read_iops);
    throttle("throttleWriteIOPSDevice", bio.throttle_write_iops);
    res.block_io = bio;
  }
  r.each("hugepageLimits", [&](const json& e, const std::string& w) {
    Obj h(e, w);
    HugepageLimit hl;
    hl.page_size = h.str("pageSize").value_or("");
    if (hl.page_size.empty()) fail(h.at("pageSize"), "required");
    hl.limit = h.uint64("limit").value_or(0);
    res.hugepage_limits.push_back(hl);
  });
  if (auto n = r.obj("network")) {
    NetworkResources net;
    net.class_id = n->uint_as<uint32_t>("classID");
    n->each("priorities", [&](const json& e, const std::string& w) {
      Obj p(e, w);
      net.priorities.push_back(
          {p.str("name").value_or(""), p.uint_as<uint32_t>("priority").value_or(0)});
    });
    res.network = net;
  }
  res.unified = r.string_map("unified");
  return res;
}

Seccomp parse_seccomp(const Obj& s) {
  Seccomp sc;
  auto def = s.str("defaultAction");
  if (!def) fail(s.at("defaultAction"), "required");
  sc.default_action = *def;
  sc.default_errno_ret = s.uint_as<uint32_t>("defaultErrnoRet");
  sc.architectures = s.strings("architectures");
  sc.flags = s.strings("flags");
  sc.listener_path = s.str("listenerPath").value_or("");
  sc.listener_metadata = s.str("listenerMetadata").value_or("");
  s.each("syscalls", [&](const json& e, const std::string& w) {
    Obj o(e, w);
    SeccompSyscall sys;
    sys.names = o.strings("names");
    if (sys.names.empty()) fail(o.at("names"), "required");
    auto action = o.str("action");
    if (!action) fail(o.at("action"), "required");
    sys.action = *action;
    sys.errno_ret = o.uint_as<uint32_t>("errnoRet");
    o.each("args", [&](const json& a, const std::string& aw) {
      Obj ao(a, aw);
      SeccompArg arg;
      arg.index = ao.uint_as<unsigned>("index").value_or(0);
      if (arg.index > 5) fail(ao.at("index"), "must be 0..5, got " + std::to_string(arg.index));
      arg.value = ao.uint64("value").value_or(0);
      arg.value_two = ao.uint64("valueTwo").value_or(0);
      auto op = ao.str("op");
      if (!op) fail(ao.at("op"), "required");
      arg.op = *op;
      sys.args.push_back(arg);
    });
    sc.syscalls.push_back(std::move(sys));
  });
  return sc;
}

Linux parse_linux(const Obj& l) {
  Linux lx;
  static const char* kTypes[] = {"pid", "network", "mount", "ipc", "uts", "user", "cgroup", "time"};
  l.each("namespaces", [&](const json& e, const std::string& w) {
    Obj n(e, w);
    auto type = n.str("type");
    if (!type) fail(n.at("type"), "required");
    bool known = false;
    for (auto* t : kTypes) known |= (*type == t);
    if (!known) fail(n.at("type"), "unknown namespace type \"" + *type + "\"");
    if (lx.find_namespace(*type)) fail(n.at("type"), "duplicate namespace \"" + *type + "\"");
    Namespace ns{*type, n.str("path").value_or("")};
    if (!ns.path.empty() && ns.path[0] != '/')
      fail(n.at("path"), "must be absolute, got \"" + ns.path + "\"");
    lx.namespaces.push_back(ns);
  });
  lx.uid_mappings = parse_mappings(l, "uidMappings");
  lx.gid_mappings = parse_mappings(l, "gidMappings");
  l.each("devices", [&](const json& e, const std::string& w) {
    Obj d(e, w);
    Device dev;
    auto type = d.str("type");
    if (!type) fail(d.at("type"), "required");
    if (*type != "c" && *type != "b" && *type != "u" && *type != "p")
      fail(d.at("type"), "unknown device type \"" + *type + "\"");
    dev.type = (*type)[0];
    auto path = d.str("path");
    if (!path || path->empty()) fail(d.at("path"), "required");
    if ((*path)[0] != '/') fail(d.at("path"), "must be absolute, got \"" + *path + "\"");
    dev.path = *path;
    dev.major = d.int64("major").value_or(0);
    dev.minor = d.int64("minor").value_or(0);
    if (dev.type != 'p' && (!d.get("major") || !d.get("minor")))
      fail(d.at("major"), "major and minor are required for device type " + *type);
    dev.file_mode = d.uint_as<uint32_t>("fileMode");
    dev.uid = d.uint_as<uint32_t>("uid");
    dev.gid = d.uint_as<uint32_t>("gid");
    lx.devices.push_back(dev);
  });
  lx.cgroups_path = l.str("cgroupsPath").value_or("");
  if (auto r = l.obj("resources")) lx.resources = parse_resources(*r);
  lx.rootfs_propagation = l.str("rootfsPropagation").value_or("");
  if (!lx.rootfs_propagation.empty()) {
    static const char* kProp[] = {"shared",  "slave",  "private",  "unbindable",
                                  "rshared", "rslave", "rprivate", "runbindable"};
    bool ok = false;
    for (auto* p : kProp) ok |= (lx.rootfs_propagation == p);
    if (!ok)
      fail(l.at("rootfsPropagation"), "unknown propagation \"" + lx.rootfs_propagation + "\"");
  }
  lx.sysctl = l.string_map("sysctl");
  if (auto s = l.obj("seccomp")) lx.seccomp = parse_seccomp(*s);
  lx.masked_paths = l.strings("maskedPaths");
  lx.readonly_paths = l.strings("readonlyPaths");
  lx.mount_label = l.str("mountLabel").value_or("");
  if (auto p = l.obj("personality")) {
    Personality pers;
    pers.domain = p->str("domain").value_or("");
    if (pers.domain != "LINUX" && pers.domain != "LINUX32")
      fail(p->at("domain"), "unknown personality domain \"" + pers.domain + "\"");
    pers.flags = p->strings("flags");
    lx.personality = pers;
  }
  if (auto rdt = l.obj("intelRdt")) lx.intel_rdt_clos = rdt->str("closID").value_or("rdt");
  return lx;
}

}  // namespace

const Namespace* Linux::find_namespace(const std::string& type) const {
  for (auto& n : namespaces)
    if (n.type == type) return &n;
  return nullptr;
}

std::optional<int> rlimit_from_name(const std::string& name) {
  static const std::pair<const char*, int> kLimits[] = {
      {"RLIMIT_CPU", RLIMIT_CPU},           {"RLIMIT_FSIZE", RLIMIT_FSIZE},
      {"RLIMIT_DATA", RLIMIT_DATA},         {"RLIMIT_STACK", RLIMIT_STACK},
      {"RLIMIT_CORE", RLIMIT_CORE},         {"RLIMIT_RSS", RLIMIT_RSS},
      {"RLIMIT_NPROC", RLIMIT_NPROC},       {"RLIMIT_NOFILE", RLIMIT_NOFILE},
      {"RLIMIT_MEMLOCK", RLIMIT_MEMLOCK},   {"RLIMIT_AS", RLIMIT_AS},
      {"RLIMIT_LOCKS", RLIMIT_LOCKS},       {"RLIMIT_SIGPENDING", RLIMIT_SIGPENDING},
      {"RLIMIT_MSGQUEUE", RLIMIT_MSGQUEUE}, {"RLIMIT_NICE", RLIMIT_NICE},
      {"RLIMIT_RTPRIO", RLIMIT_RTPRIO},     {"RLIMIT_RTTIME", RLIMIT_RTTIME}};
  for (auto& [n, v] : kLimits)
    if (name == n) return v;
  return std::nullopt;
}

Seccomp parse_seccomp(const json& j, const std::string& where) {
  return parse_seccomp(Obj(j, where));
}

Process parse_process(const json& j, const std::string& where) {
  Obj p(j, where);
  Process proc;
  proc.terminal = p.boolean("terminal").value_or(false);
  if (auto cs = p.obj("consoleSize")) {
    proc.console_size = ConsoleSize{cs->uint_as<unsigned>("height").value_or(0),
                                    cs->uint_as<unsigned>("width").value_or(0)};
  }
  if (auto u = p.obj("user")) {
    proc.user.uid = u->uint_as<uint32_t>("uid").value_or(0);
    proc.user.gid = u->uint_as<uint32_t>("gid").value_or(0);
    proc.user.umask = u->uint_as<uint32_t>("umask");
    u->each("additionalGids", [&](const json& e, const std::string& w) {
      if (!e.is_number_integer() || e.get<int64_t>() < 0 ||
          e.get<int64_t>() > std::numeric_limits<uint32_t>::max())
        wrong_type(w, "a gid", e);
      proc.user.additional_gids.push_back(e.get<uint32_t>());
    });
    if (u->get("username")) fail(u->at("username"), "only supported on Windows");
  }
  proc.args = p.strings("args");
  if (p.get("commandLine")) fail(p.at("commandLine"), "only supported on Windows");
  proc.env = p.strings("env");
  for (size_t i = 0; i < proc.env.size(); ++i)
    if (proc.env[i].find('=') == std::string::npos)
      fail(p.at("env") + "[" + std::to_string(i) + "]",
           "expected KEY=VALUE, got \"" + proc.env[i] + "\"");
  auto cwd = p.str("cwd");
  if (!cwd) fail(p.at("cwd"), "required");
  if (cwd->empty() || (*cwd)[0] != '/') fail(p.at("cwd"), "must be absolute, got \"" + *cwd + "\"");
  proc.cwd = *cwd;
  if (auto c = p.obj("capabilities")) {
    // a set the object leaves out is empty, not "as the runtime has it": docker sends
    // `"capabilities": {}` for --cap-drop ALL (runc and crun read it the same way)
    Capabilities caps;
    auto set = [&](const char* name) {
      return c->get(name) ? parse_cap_list(*c, name) : std::vector<int>{};
    };
    caps.bounding = set("bounding");
    caps.effective = set("effective");
    caps.inheritable = set("inheritable");
    caps.permitted = set("permitted");
    caps.ambient = set("ambient");
    proc.capabilities = caps;
  }
  p.each("rlimits", [&](const json& e, const std::string& w) {
    Obj r(e, w);
    Rlimit rl;
    auto type = r.str("type");
    if (!type) fail(r.at("type"), "required");
    auto res = rlimit_from_name(*type);
    if (!res) fail(r.at("type"), "unknown rlimit \"" + *type + "\"");
    for (auto& other : proc.rlimits)
      if (other.type == *type) fail(r.at("type"), "duplicate rlimit \"" + *type + "\"");
    rl.type = *type;
    rl.resource = *res;
    rl.soft = r.uint64("soft").value_or(0);
    rl.hard = r.uint64("hard").value_or(0);
    if (rl.soft > rl.hard) fail(r.at("soft"), "soft limit exceeds hard limit");
    proc.rlimits.push_back(rl);
  });
  proc.no_new_privileges = p.boolean("noNewPrivileges").value_or(false);
  proc.apparmor_profile = p.str("apparmorProfile").value_or("");
  if (auto o = p.int64("oomScoreAdj")) {
    if (*o < -1000 || *o > 1000) fail(p.at("oomScoreAdj"), "must be -1000..1000");
    proc.oom_score_adj = static_cast<int>(*o);
  }
  proc.selinux_label = p.str("selinuxLabel").value_or("");
  return proc;
}

Spec parse_spec(const std::string& text) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {  // syntax, and numbers out of range ("1e400")
    throw Error("config.json: invalid JSON: " + json_error_text(e.what()), EINVAL);
  }
  Obj top(j, "");
  Spec spec;
  auto version = top.str("ociVersion");
  if (!version) fail("ociVersion", "required");
  if (!version->starts_with("1.")) fail("ociVersion", "unsupported version \"" + *version + "\"");
  spec.oci_version = *version;
  if (const json* p = top.get("process")) spec.process = parse_process(*p, "process");
  auto root = top.obj("root");
  if (!root) fail("root", "required");
  auto rpath = root->str("path");
  if (!rpath || rpath->empty()) fail("root.path", "required");
  if ((*rpath)[0] != '/' && clean_path(*rpath).starts_with(".."))
    fail("root.path", "relative path \"" + *rpath + "\" leaves the bundle");
  spec.root.path = *rpath;
  spec.root.readonly = root->boolean("readonly").value_or(false);
  spec.hostname = top.str("hostname").value_or("");
  spec.domainname = top.str("domainname").value_or("");
  top.each("mounts", [&](const json& e, const std::string& w) {
    Obj m(e, w);
    Mount mnt;
    auto dest = m.str("destination");
    if (!dest || dest->empty()) fail(m.at("destination"), "required");
    if ((*dest)[0] != '/') fail(m.at("destination"), "must be absolute, got \"" + *dest + "\"");
    mnt.destination = *dest;
    mnt.type = m.str("type").value_or("");
    mnt.source = m.str("source").value_or("");
    mnt.options = m.strings("options");
    mnt.uid_mappings = parse_mappings(m, "uidMappings");
    mnt.gid_mappings = parse_mappings(m, "gidMappings");
    if (mnt.uid_mappings.empty() != mnt.gid_mappings.empty())
      fail(m.at(mnt.uid_mappings.empty() ? "uidMappings" : "gidMappings"),
           "an id-mapped mount needs both uidMappings and gidMappings");
    spec.mounts.push_back(std::move(mnt));
  });
  if (auto h = top.obj("hooks")) {
    auto list = [&](const char* key, std::vector<Hook>& out) {
      h->each(key, [&](const json& e, const std::string& w) { out.push_back(parse_hook(e, w)); });
    };
    list("prestart", spec.hooks.prestart);
    list("createRuntime", spec.hooks.create_runtime);
    list("createContainer", spec.hooks.create_container);
    list("startContainer", spec.hooks.start_container);
    list("poststart", spec.hooks.poststart);
    list("poststop", spec.hooks.poststop);
  }
  spec.annotations = top.string_map("annotations");
  if (auto l = top.obj("linux")) spec.linux_ = parse_linux(*l);
  if (top.get("solaris") || top.get("windows") || top.get("vm"))
    fail(top.get("windows")   ? "windows"
         : top.get("solaris") ? "solaris"
                              : "vm",
         "not supported on linux");
  return spec;
}

Spec load_spec(const std::string& bundle) {
  auto text = read_file_if_exists(bundle + "/config.json");
  if (!text) throw Error("open " + bundle + "/config.json: no such file or directory", ENOENT);
  return parse_spec(*text);
}

}  // namespace racker::oci
