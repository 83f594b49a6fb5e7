#include "engine/containers.hpp"
#include "engine/foreign_arch.hpp"
#include "engine/idrange.hpp"

#include <dirent.h>
#include <limits.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/mount.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <thread>

#include "base/error.hpp"
#include "base/fd.hpp"
#include "base/fs.hpp"
#include "base/log.hpp"
#include "base/strings.hpp"
#include "engine/exec_cp.hpp"
#include "engine/network.hpp"
#include "engine/seccomp_profile.hpp"
#include "runtime/container.hpp"

namespace racker::engine {
namespace {

bool is_hex_id(const std::string& s) {
  if (s.size() != 64) return false;
  for (char c : s)
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  return true;
}

template <typename T>
void read_field(const nlohmann::json& j, const char* key, T& out) {
  auto it = j.find(key);
  if (it == j.end()) return;
  try {
    out = it->template get<T>();
  } catch (const nlohmann::json::exception&) {
    // a mistyped field (a meta.json edited by hand or by an older racker): the default
  }
}

ContainerStatus status_from_runtime(const std::string& s) {
  if (s == "created") return ContainerStatus::created;
  if (s == "running") return ContainerStatus::running;
  if (s == "paused") return ContainerStatus::paused;
  return ContainerStatus::stopped;
}

}  // namespace

nlohmann::json ContainerRecord::to_json() const {
  nlohmann::json j = {{"id", id},           {"name", name},
                      {"image", image},     {"image_id", image_id},
                      {"created", created}, {"command", command}};
  if (!stop_signal.empty()) j["stop_signal"] = stop_signal;
  if (booted) {
    j["booted"] = true;
    j["boot_timeout_s"] = boot_timeout_s;
  }
  if (interactive) j["interactive"] = true;
  if (never_started) j["state"] = "created";
  if (exit_code) j["exit_code"] = *exit_code;
  if (userns_size) j["userns"] = {{"uid", userns_uid}, {"gid", userns_gid}, {"size", userns_size}};
  if (!security_opt.empty()) j["security_opt"] = security_opt;
  if (!seccomp_profile.empty()) j["seccomp_profile"] = seccomp_profile;
  for (auto& m : publish) j["publish"].push_back(m.to_json());
  for (auto& m : ports) j["ports"].push_back(m.to_json());
  return j;
}

ContainerRecord ContainerRecord::from_json(const nlohmann::json& j) {
  ContainerRecord r;
  if (!j.is_object()) return r;
  read_field(j, "id", r.id);
  read_field(j, "name", r.name);
  read_field(j, "image", r.image);
  read_field(j, "image_id", r.image_id);
  read_field(j, "created", r.created);
  read_field(j, "command", r.command);
  read_field(j, "stop_signal", r.stop_signal);
  read_field(j, "booted", r.booted);
  read_field(j, "boot_timeout_s", r.boot_timeout_s);
  read_field(j, "interactive", r.interactive);
  read_field(j, "security_opt", r.security_opt);
  read_field(j, "seccomp_profile", r.seccomp_profile);
  for (auto* key : {"publish", "ports"})
    if (auto it = j.find(key); it != j.end() && it->is_array())
      for (auto& m : *it)
        (std::string(key) == "publish" ? r.publish : r.ports).push_back(PortMapping::from_json(m));
  std::string state;
  read_field(j, "state", state);
  r.never_started = state == "created";
  if (auto it = j.find("exit_code"); it != j.end() && it->is_number_integer())
    r.exit_code = it->get<int>();
  if (auto it = j.find("userns"); it != j.end() && it->is_object()) {
    read_field(*it, "uid", r.userns_uid);
    read_field(*it, "gid", r.userns_gid);
    read_field(*it, "size", r.userns_size);
  }
  return r;
}

const char* to_string(ContainerStatus s) {
  static constexpr const char* kNames[] = {"created", "running", "paused", "stopped", "exited"};
  return kNames[static_cast<size_t>(s)];
}

std::string ContainerEntry::status_text() const {
  if (status == ContainerStatus::running) return "Up";
  if (status == ContainerStatus::paused) return "Up (Paused)";
  if (status == ContainerStatus::created) return "Created";
  if (rec.exit_code) return "Exited (" + std::to_string(*rec.exit_code) + ")";
  return "Exited";
}

ContainerStore::ContainerStore(std::string store_root, std::string state_root)
    : store_root_(std::move(store_root)), state_root_(std::move(state_root)) {}

ContainerEntry ContainerStore::load(const std::string& id) const {
  ContainerEntry c;
  c.id = id;
  c.dir = dir_of(id);
  return refresh(c);
}

void ContainerStore::save(const ContainerRecord& rec) const {
  write_file_atomic(dir_of(rec.id) + "/meta.json", rec.to_json().dump(2));
}

ContainerEntry ContainerStore::refresh(const ContainerEntry& in) const {
  ContainerEntry c = in;
  c.status = ContainerStatus::exited;
  c.pid = 0;
  c.has_state = false;
  try {
    if (auto text = read_file_if_exists(c.dir + "/meta.json"))
      c.rec = ContainerRecord::from_json(nlohmann::json::parse(*text));
  } catch (const std::exception&) {
    // half written by a racker killed before its first save: what the id gives
  }
  c.rec.id = c.id;
  if (c.rec.name.empty()) c.rec.name = "racker-" + c.id.substr(0, 12);
  if (c.rec.never_started) c.status = ContainerStatus::created;  // racker create
  if (!path_exists(state_root_ + "/" + c.id)) return c;
  try {
    runtime::Runtime rt(state_root_);
    auto st = rt.state(c.id);
    if (real_path(st.bundle) != real_path(c.dir)) return c;  // another store's container
    c.has_state = true;
    c.status = status_from_runtime(st.status);
    c.pid = st.pid;
  } catch (const Error&) {
    // state still being created, or half written by a racker killed mid-run
    c.has_state = true;
    c.status = ContainerStatus::stopped;
  }
  return c;
}

std::vector<ContainerEntry> ContainerStore::list() const {
  std::vector<ContainerEntry> out;
  for (auto& n : dir_names(store_root_ + "/containers"))
    if (is_hex_id(n)) out.push_back(load(n));
  std::sort(out.begin(), out.end(), [](const ContainerEntry& a, const ContainerEntry& b) {
    return a.rec.created > b.rec.created;
  });
  return out;
}

ContainerEntry ContainerStore::find(const std::string& key) const {
  if (!key.empty()) {
    auto all = list();
    for (auto& c : all)
      if (c.name() == key || c.id == key) return c;
    const ContainerEntry* match = nullptr;
    int n = 0;
    for (auto& c : all)
      if (c.id.starts_with(key)) {
        match = &c;
        ++n;
      }
    if (n == 1) return *match;
    if (n > 1) throw Error("container id prefix \"" + key + "\" is ambiguous", EINVAL);
  }
  throw Error("no such container: " + printable(key), ENOENT, ErrorKind::not_found);
}

bool ContainerStore::wait_stopped(const ContainerEntry& c, int timeout_ms) const {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (true) {
    if (!refresh(c).running()) return true;
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

void ContainerStore::kill(const ContainerEntry& c, int sig) const {
  auto cur = refresh(c);
  if (!cur.running())
    throw Error("container " + c.name() + " is not running", ESRCH, ErrorKind::conflict);
  runtime::Runtime(state_root_).kill(c.id, sig, false);
}

bool ContainerStore::stop(const ContainerEntry& c, int timeout_s) const {
  auto cur = refresh(c);
  if (!cur.running()) return false;
  int sig = SIGTERM;
  std::string guest_signal;  // "guest:SIGRTMIN+3": sent by the guest's own kill (emulated)
  if (cur.rec.stop_signal.starts_with("guest:")) {
    guest_signal = cur.rec.stop_signal.substr(6);
  } else if (!cur.rec.stop_signal.empty()) {
    try {
      sig = runtime::parse_signal(cur.rec.stop_signal);
    } catch (const Error&) {
    }
  }
  runtime::Runtime rt(state_root_);
  if (!guest_signal.empty()) {
    // a system under qemu-user, which maps real-time signals onto other host numbers: the
    // guest's kill, through the same qemu, delivers the signal the guest means
    ExecRequest q;
    q.container = c.id;
    q.args = guest_kill_argv(guest_signal);
    q.store_root = store_root_;
    q.state_root = state_root_;
    try {
      Redirect r0(0, open_dev_null().get()), r1(1, open_dev_null().get()),
          r2(2, open_dev_null().get());
      if (exec_in_container(q) != 0) timeout_s = 0;
    } catch (const Error& e) {
      log::debug("stop " + c.name() + ": " + e.what());
      timeout_s = 0;
    }
  } else {
    try {
      rt.kill(c.id, sig, false);
    } catch (const Error&) {
      if (refresh(c).running()) throw;
      return false;
    }
  }
  if (wait_stopped(c, timeout_s * 1000)) return false;
  try {
    rt.kill(c.id, SIGKILL, true);
  } catch (const Error&) {
    if (refresh(c).running()) throw;
  }
  if (!wait_stopped(c, 10000))
    throw Error("container " + c.name() + " did not stop after SIGKILL", EBUSY);
  return true;
}

void ContainerStore::remove(const ContainerEntry& c, bool force) const {
  auto cur = refresh(c);
  if (cur.running() && !force)
    throw Error("cannot remove running container " + c.name() + ": stop it first or use -f", EBUSY,
                ErrorKind::conflict);
  if (cur.has_state)
    runtime::Runtime(state_root_).remove(c.id, true);
  else
    runtime::StateStore(state_root_).remove_partial(c.id);  // a create killed at its start
  unmount_and_unplug(cur);
  remove_tree(c.dir);
  if (c.rec.userns_size)
    release_range(state_root_, {c.rec.userns_uid, c.rec.userns_gid, c.rec.userns_size}, c.dir);
}

void ContainerStore::unmount_and_unplug(const ContainerEntry& c) const {
  net::teardown(state_root_, c.id);  // nothing to do unless it had a namespace of its own
  std::string rootfs = c.dir + "/rootfs";
  for (int i = 0; i < 8 && is_mount_point(real_path(rootfs)); ++i)
    if (::umount2(rootfs.c_str(), MNT_DETACH) != 0) break;
  // id-mapped layers left attached by a racker that died while it mounted the overlay
  if (path_exists(c.dir + "/idmap"))
    for (auto& n : dir_names(c.dir + "/idmap"))
      ::umount2((c.dir + "/idmap/" + n).c_str(), MNT_DETACH);
}

void ContainerStore::release_running_parts(const ContainerEntry& c) const {
  if (c.has_state) {
    try {
      runtime::Runtime(state_root_).remove(c.id, true);
    } catch (const Error& e) {
      log::warn("container " + c.name() + ": " + e.what());
    }
  }
  unmount_and_unplug(c);
}

namespace {

// The seccomp profiles in effect: the container process' ("default", "os-default",
// "unconfined" or a profile's path); a booted one's init and its command have one each.
nlohmann::json seccomp_of(const ContainerEntry& c) {
  std::string init = "unconfined";
  try {
    auto config = nlohmann::json::parse(read_file_if_exists(c.dir + "/config.json").value_or("{}"));
    if (config.contains("annotations") && config["annotations"].is_object())
      init = config["annotations"].value(kSeccompAnnotation, "unconfined");
  } catch (const nlohmann::json::exception&) {
    init = "";
  }
  std::string command = c.rec.seccomp_profile.empty() ? init : c.rec.seccomp_profile;
  nlohmann::json j = {{"profile", c.rec.booted ? init : command}};
  if (c.rec.booted) j["command_profile"] = command;
  return j;
}

}  // namespace

nlohmann::json ContainerStore::inspect(const ContainerEntry& c) const {
  auto cur = refresh(c);
  nlohmann::json state = {{"status", cur.running() ? to_string(cur.status) : "exited"},
                          {"running", cur.running()},
                          {"pid", cur.pid}};
  if (cur.rec.exit_code) state["exit_code"] = *cur.rec.exit_code;
  nlohmann::json userns = {{"mode", cur.rec.userns_size ? "auto" : "host"}};
  if (cur.rec.userns_size) {
    userns["uid"] = cur.rec.userns_uid;
    userns["gid"] = cur.rec.userns_gid;
    userns["size"] = cur.rec.userns_size;
  }
  // docker's shapes: {"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}]}
  auto port_map = [](const std::vector<PortMapping>& list) {
    nlohmann::json m = nlohmann::json::object();
    for (auto& p : list)
      m[std::to_string(p.container_port) + "/" + p.proto].push_back(
          {{"HostIp", p.host_ip.empty() ? "0.0.0.0" : p.host_ip},
           {"HostPort", p.host_port ? std::to_string(p.host_port) : ""}});
    return m;
  };
  return {{"id", cur.id},
          {"userns", userns},
          {"name", cur.name()},
          {"image", cur.rec.image},
          {"image_id", cur.rec.image_id},
          {"created", cur.rec.created},
          {"command", cur.rec.command},
          {"state", state},
          {"pid", cur.pid},
          {"dir", cur.dir},
          {"config", cur.dir + "/config.json"},
          {"log", cur.dir + "/log"},
          {"HostConfig",
           {{"SecurityOpt", cur.rec.security_opt}, {"PortBindings", port_map(cur.rec.publish)}}},
          {"NetworkSettings",
           {{"Ports", port_map(cur.running() ? cur.rec.ports : std::vector<PortMapping>{})}}},
          {"seccomp", seccomp_of(cur)}};
}

}  // namespace racker::engine
