#include "engine/containers.hpp"

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
#include "base/fs.hpp"
#include "base/log.hpp"
#include "base/strings.hpp"
#include "engine/network.hpp"
#include "runtime/container.hpp"

namespace racker::engine {
namespace {

bool is_hex_id(const std::string& s) {
  if (s.size() != 64) return false;
  for (char c : s)
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  return true;
}

}  // namespace

std::string ContainerEntry::status_text() const {
  if (status == "running") return "Up";
  if (status == "paused") return "Up (Paused)";
  if (status == "created") return "Created";
  if (meta.contains("exit_code") && meta["exit_code"].is_number_integer())
    return "Exited (" + std::to_string(meta["exit_code"].get<int>()) + ")";
  return "Exited";
}

Containers::Containers(std::string store_root, std::string state_root)
    : store_root_(std::move(store_root)), state_root_(std::move(state_root)) {}

ContainerEntry Containers::load(const std::string& id) const {
  ContainerEntry c;
  c.id = id;
  c.dir = store_root_ + "/containers/" + id;
  try {
    c.meta = nlohmann::json::parse(read_file_if_exists(c.dir + "/meta.json").value_or("{}"));
  } catch (const std::exception&) {
    c.meta = nlohmann::json::object();
  }
  if (!c.meta.is_object()) c.meta = nlohmann::json::object();
  c.name = c.meta.value("name", "racker-" + id.substr(0, 12));
  return refresh(c);
}

ContainerEntry Containers::refresh(const ContainerEntry& in) const {
  ContainerEntry c = in;
  c.status = "exited";
  c.pid = 0;
  c.has_state = false;
  try {
    c.meta = nlohmann::json::parse(read_file(c.dir + "/meta.json"));
  } catch (const std::exception&) {
  }
  if (c.meta.value("state", "") == "created") c.status = "created";  // racker create
  if (!path_exists(state_root_ + "/" + c.id)) return c;
  try {
    runtime::Runtime rt(state_root_);
    auto st = rt.state(c.id);
    if (real_path(st.bundle) != real_path(c.dir)) return c;  // another store's container
    c.has_state = true;
    c.status = st.status;
    c.pid = st.pid;
  } catch (const Error&) {
    // state still being created, or half written by a racker killed mid-run
    c.has_state = true;
    c.status = "stopped";
  }
  return c;
}

std::vector<ContainerEntry> Containers::list() const {
  std::vector<ContainerEntry> out;
  std::string dir = store_root_ + "/containers";
  DIR* d = ::opendir(dir.c_str());
  if (!d) return out;
  while (auto* e = ::readdir(d)) {
    std::string n = e->d_name;
    if (is_hex_id(n)) out.push_back(load(n));
  }
  ::closedir(d);
  std::sort(out.begin(), out.end(), [](const ContainerEntry& a, const ContainerEntry& b) {
    return a.meta.value("created", "") > b.meta.value("created", "");
  });
  return out;
}

ContainerEntry Containers::find(const std::string& key) const {
  if (!key.empty()) {
    auto all = list();
    for (auto& c : all)
      if (c.name == key || c.id == key) return c;
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

bool Containers::wait_stopped(const ContainerEntry& c, int timeout_ms) const {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (true) {
    if (!refresh(c).running()) return true;
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

void Containers::kill(const ContainerEntry& c, int sig) const {
  auto cur = refresh(c);
  if (!cur.running()) throw Error("container " + c.name + " is not running", ESRCH);
  runtime::Runtime(state_root_).kill(c.id, sig, false);
}

bool Containers::stop(const ContainerEntry& c, int timeout_s) const {
  auto cur = refresh(c);
  if (!cur.running()) return false;
  int sig = SIGTERM;
  std::string name = cur.meta.value("stop_signal", "");
  if (!name.empty()) {
    try {
      sig = runtime::parse_signal(name);
    } catch (const Error&) {
    }
  }
  runtime::Runtime rt(state_root_);
  try {
    rt.kill(c.id, sig, false);
  } catch (const Error&) {
    if (refresh(c).running()) throw;
    return false;
  }
  if (wait_stopped(c, timeout_s * 1000)) return false;
  try {
    rt.kill(c.id, SIGKILL, true);
  } catch (const Error&) {
    if (refresh(c).running()) throw;
  }
  if (!wait_stopped(c, 10000))
    throw Error("container " + c.name + " did not stop after SIGKILL", EBUSY);
  return true;
}

void Containers::remove(const ContainerEntry& c, bool force) const {
  auto cur = refresh(c);
  if (cur.running() && !force)
    throw Error("cannot remove running container " + c.name + ": stop it first or use -f", EBUSY);
  if (cur.has_state)
    runtime::Runtime(state_root_).remove(c.id, true);
  else
    runtime::StateStore(state_root_).remove_partial(c.id);  // a create killed at its start
  net::teardown(state_root_, c.id);  // nothing to do unless it had a namespace of its own
  std::string rootfs = c.dir + "/rootfs";
  for (int i = 0; i < 8 && is_mount_point(real_path(rootfs)); ++i)
    if (::umount2(rootfs.c_str(), MNT_DETACH) != 0) break;
  remove_tree(c.dir);
}

nlohmann::json Containers::inspect(const ContainerEntry& c) const {
  auto cur = refresh(c);
  nlohmann::json state = {{"status", cur.running() ? cur.status : "exited"},
                          {"running", cur.running()},
                          {"pid", cur.pid}};
  if (cur.meta.contains("exit_code")) state["exit_code"] = cur.meta["exit_code"];
  return {{"id", cur.id},
          {"name", cur.name},
          {"image", cur.meta.value("image", "")},
          {"image_id", cur.meta.value("image_id", "")},
          {"created", cur.meta.value("created", "")},
          {"command", cur.meta.value("command", nlohmann::json::array())},
          {"state", state},
          {"pid", cur.pid},
          {"dir", cur.dir},
          {"config", cur.dir + "/config.json"},
          {"log", cur.dir + "/log"}};
}

}  // namespace racker::engine
