#include "runtime/systemd_bus.hpp"

#include <sys/stat.h>
#include <systemd/sd-bus.h>

#include <cerrno>
#include <map>

#include "base/dynlib.hpp"
#include "base/error.hpp"
#include "base/log.hpp"
#include "base/strings.hpp"
#include "runtime/cgroups_internal.hpp"

namespace racker::runtime::systemd {

namespace {

// ---- the lazily loaded library -------------------------------------------------------------

struct SdBus {
  decltype(&::sd_bus_open_system) open_system;
  decltype(&::sd_bus_new) bus_new;
  decltype(&::sd_bus_set_address) set_address;
  decltype(&::sd_bus_start) start;
  decltype(&::sd_bus_flush_close_unref) flush_close_unref;
  decltype(&::sd_bus_message_new_method_call) new_method_call;
  decltype(&::sd_bus_message_append) append;
  decltype(&::sd_bus_message_append_array) append_array;
  decltype(&::sd_bus_message_open_container) open_container;
  decltype(&::sd_bus_message_close_container) close_container;
  decltype(&::sd_bus_message_read) read;
  decltype(&::sd_bus_message_unref) message_unref;
  decltype(&::sd_bus_call) call;
  decltype(&::sd_bus_error_free) error_free;
  decltype(&::sd_bus_match_signal) match_signal;
  decltype(&::sd_bus_slot_unref) slot_unref;
  decltype(&::sd_bus_process) process;
  decltype(&::sd_bus_wait) wait;
};

struct Loaded {
  SdBus fn{};
  std::string error;
};

Loaded load() {
  Loaded l;
  // never unloaded: cheap to keep, and sd-bus keeps per-thread state
  void* lib = open_library("libsystemd.so.0", l.error);
  if (!lib) return l;
  SdBus& b = l.fn;
  std::string& err = l.error;
  resolve_symbol(lib, "sd_bus_open_system", b.open_system, err);
  resolve_symbol(lib, "sd_bus_new", b.bus_new, err);
  resolve_symbol(lib, "sd_bus_set_address", b.set_address, err);
  resolve_symbol(lib, "sd_bus_start", b.start, err);
  resolve_symbol(lib, "sd_bus_flush_close_unref", b.flush_close_unref, err);
  resolve_symbol(lib, "sd_bus_message_new_method_call", b.new_method_call, err);
  resolve_symbol(lib, "sd_bus_message_append", b.append, err);
  resolve_symbol(lib, "sd_bus_message_append_array", b.append_array, err);
  resolve_symbol(lib, "sd_bus_message_open_container", b.open_container, err);
  resolve_symbol(lib, "sd_bus_message_close_container", b.close_container, err);
  resolve_symbol(lib, "sd_bus_message_read", b.read, err);
  resolve_symbol(lib, "sd_bus_message_unref", b.message_unref, err);
  resolve_symbol(lib, "sd_bus_call", b.call, err);
  resolve_symbol(lib, "sd_bus_error_free", b.error_free, err);
  resolve_symbol(lib, "sd_bus_match_signal", b.match_signal, err);
  resolve_symbol(lib, "sd_bus_slot_unref", b.slot_unref, err);
  resolve_symbol(lib, "sd_bus_process", b.process, err);
  resolve_symbol(lib, "sd_bus_wait", b.wait, err);
  return l;
}

const SdBus& sd() {
  static const Loaded loaded = load();
  if (!loaded.error.empty())
    throw Error("libsystemd.so.0 could not be loaded: " + loaded.error, ELIBACC);
  return loaded.fn;
}

constexpr const char* kSystemd = "org.freedesktop.systemd1";
constexpr const char* kSystemdPath = "/org/freedesktop/systemd1";
constexpr const char* kManager = "org.freedesktop.systemd1.Manager";

uint64_t usec(std::chrono::milliseconds ms) {
  return static_cast<uint64_t>(ms.count()) * 1000;
}

// sd-bus returns negative errnos; a D-Bus error names itself in err.
[[noreturn]] void fail(const std::string& what, int r, const sd_bus_error* err = nullptr) {
  std::string text;
  if (err && err->message)
    text = err->message;
  else if (err && err->name)
    text = err->name;
  else
    text = cgroups_internal::errno_text(-r);
  throw Error(what + ": " + text, -r);
}

void check(const std::string& what, int r) {
  if (r < 0) fail(what, r);
}

// Owns one message.
struct Message {
  sd_bus_message* m = nullptr;
  Message() = default;
  Message(const Message&) = delete;
  Message& operator=(const Message&) = delete;
  ~Message() {
    if (m) sd().message_unref(m);
  }
};

struct BusError {
  sd_bus_error e = SD_BUS_ERROR_NULL;
  BusError() = default;
  BusError(const BusError&) = delete;
  BusError& operator=(const BusError&) = delete;
  ~BusError() { sd().error_free(&e); }
  bool is(const char* name) const { return e.name && std::string_view(e.name) == name; }
};

void append_properties(sd_bus_message* m, const std::vector<Property>& props) {
  const auto& b = sd();
  const std::string what = "d-bus message";
  check(what, b.open_container(m, 'a', "(sv)"));
  for (const auto& p : props) {
    check(what, b.open_container(m, 'r', "sv"));
    check(what, b.append(m, "s", p.name.c_str()));
    if (auto* v = std::get_if<bool>(&p.value)) {
      check(what, b.append(m, "v", "b", static_cast<int>(*v)));
    } else if (auto* t = std::get_if<uint64_t>(&p.value)) {
      check(what, b.append(m, "v", "t", *t));
    } else if (auto* s = std::get_if<std::string>(&p.value)) {
      check(what, b.append(m, "v", "s", s->c_str()));
    } else {
      const auto& list = std::get<std::vector<uint32_t>>(p.value);
      check(what, b.open_container(m, 'v', "au"));
      check(what, b.open_container(m, 'a', "u"));
      for (uint32_t u : list) check(what, b.append(m, "u", u));
      check(what, b.close_container(m));
      check(what, b.close_container(m));
    }
    check(what, b.close_container(m));
  }
  check(what, b.close_container(m));
}

bool valid_unit_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
         c == '_' || c == '.' || c == ':' || c == '\\' || c == '@';
}

}  // namespace

struct Bus::Jobs {
  sd_bus_slot* slot = nullptr;
  std::map<std::string, std::string> removed;  // job path -> result ("done", "failed", ...)
};

bool booted() {
  struct stat st;
  return ::lstat("/run/systemd/system", &st) == 0 && S_ISDIR(st.st_mode);
}

ScopeName parse_scope_path(const std::string& path) {
  auto parts = split(path, ':');
  auto bad = [&](const std::string& why) {
    return Error("cgroupsPath \"" + path + "\": " + why, EINVAL);
  };
  if (parts.size() != 3) throw bad("the systemd cgroup driver expects \"slice:prefix:name\"");
  for (const auto& p : parts)
    for (char c : p)
      if (!valid_unit_char(c) || c == ':') throw bad("invalid character in a unit name");
  ScopeName out;
  out.slice = parts[0].empty() ? "system.slice" : parts[0];
  if (!out.slice.ends_with(".slice")) throw bad("\"" + out.slice + "\" is not a slice");
  const std::string& name = parts[2];
  if (name.empty()) throw bad("the name part is empty");
  if (name.ends_with(".slice"))
    throw bad("a slice as the container's unit is not supported (use a scope name)");
  out.unit = (parts[1].empty() ? "" : parts[1] + "-") + name;
  if (!out.unit.ends_with(".scope")) out.unit += ".scope";
  if (out.unit.size() > 255) throw bad("unit name too long");
  return out;
}

std::string machine_name(const std::string& name) {
  std::string out;
  for (char c : name) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '.';
    out += ok ? c : '-';
    if (out.size() == 64) break;
  }
  while (!out.empty() && (out.front() == '-' || out.front() == '.')) out.erase(out.begin());
  while (!out.empty() && (out.back() == '-' || out.back() == '.')) out.pop_back();
  return out.empty() ? "racker" : out;
}

Bus::Bus() : jobs_(std::make_unique<Jobs>()) {
  const auto& b = sd();
  int r = b.open_system(&bus_);
  if (r < 0) {
    // no D-Bus daemon: root may talk to PID 1 directly on its private socket
    bus_ = nullptr;
    struct stat st;
    if (::stat("/run/systemd/private", &st) != 0) fail("connect to the system bus", r);
    check("sd_bus_new", b.bus_new(&bus_));
    check("sd_bus_set_address", b.set_address(bus_, "unix:path=/run/systemd/private"));
    r = b.start(bus_);
    if (r < 0) {
      b.flush_close_unref(bus_);
      bus_ = nullptr;
      fail("connect to systemd (/run/systemd/private)", r);
    }
  }
  auto on_removed = [](sd_bus_message* m, void* userdata, sd_bus_error*) -> int {
    auto* jobs = static_cast<Jobs*>(userdata);
    uint32_t id = 0;
    const char *job = nullptr, *unit = nullptr, *result = nullptr;
    if (sd().read(m, "uoss", &id, &job, &unit, &result) >= 0 && job)
      jobs->removed[job] = result ? result : "";
    return 0;
  };
  r = b.match_signal(bus_, &jobs_->slot, kSystemd, kSystemdPath, kManager, "JobRemoved", on_removed,
                     jobs_.get());
  if (r < 0) {
    b.flush_close_unref(bus_);
    bus_ = nullptr;
    fail("subscribe to systemd's JobRemoved", r);
  }
}

Bus::~Bus() {
  if (jobs_ && jobs_->slot) sd().slot_unref(jobs_->slot);
  if (bus_) sd().flush_close_unref(bus_);
}

void Bus::wait_job(const std::string& job, const std::string& what,
                   std::chrono::milliseconds timeout) {
  const auto& b = sd();
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    int r;
    while ((r = b.process(bus_, nullptr)) > 0) {
    }
    check(what, r);
    if (auto it = jobs_->removed.find(job); it != jobs_->removed.end()) {
      if (it->second != "done") throw Error(what + ": job " + it->second, EIO);
      return;
    }
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0)
      throw Error(
          what + ": no answer from systemd within " + std::to_string(timeout.count()) + " ms",
          ETIMEDOUT);
    r = b.wait(bus_, usec(left));
    if (r < 0 && r != -EINTR) check(what, r);
  }
}

void Bus::start_transient_unit(const std::string& unit, pid_t pid,
                               const std::vector<Property>& props,
                               std::chrono::milliseconds timeout) {
  const auto& b = sd();
  const std::string what = "systemd: start transient unit " + unit;
  Message m;
  check(what,
        b.new_method_call(bus_, &m.m, kSystemd, kSystemdPath, kManager, "StartTransientUnit"));
  check(what, b.append(m.m, "ss", unit.c_str(), "fail"));
  auto all = props;
  all.push_back({"PIDs", std::vector<uint32_t>{static_cast<uint32_t>(pid)}});
  append_properties(m.m, all);
  check(what, b.append(m.m, "a(sa(sv))", 0));
  BusError err;
  Message reply;
  int r = b.call(bus_, m.m, usec(timeout), &err.e, &reply.m);
  if (r < 0) {
    if (err.is("org.freedesktop.systemd1.UnitExists"))
      throw Error(what + ": the unit already exists", EEXIST);
    fail(what, r, &err.e);
  }
  const char* job = nullptr;
  check(what, b.read(reply.m, "o", &job));
  wait_job(job, what, timeout);
}

void Bus::set_unit_properties(const std::string& unit, const std::vector<Property>& props) {
  if (props.empty()) return;
  const auto& b = sd();
  const std::string what = "systemd: set properties of " + unit;
  Message m;
  check(what, b.new_method_call(bus_, &m.m, kSystemd, kSystemdPath, kManager, "SetUnitProperties"));
  check(what, b.append(m.m, "sb", unit.c_str(), 1));
  append_properties(m.m, props);
  BusError err;
  Message reply;
  int r = b.call(bus_, m.m, usec(std::chrono::seconds(10)), &err.e, &reply.m);
  if (r < 0) fail(what, r, &err.e);
}

bool Bus::stop_unit(const std::string& unit, std::chrono::milliseconds timeout) {
  const auto& b = sd();
  const std::string what = "systemd: stop " + unit;
  Message m;
  check(what, b.new_method_call(bus_, &m.m, kSystemd, kSystemdPath, kManager, "StopUnit"));
  check(what, b.append(m.m, "ss", unit.c_str(), "replace"));
  BusError err;
  Message reply;
  int r = b.call(bus_, m.m, usec(timeout), &err.e, &reply.m);
  if (r < 0) {
    if (err.is("org.freedesktop.systemd1.NoSuchUnit")) return false;
    fail(what, r, &err.e);
  }
  const char* job = nullptr;
  check(what, b.read(reply.m, "o", &job));
  wait_job(job, what, timeout);
  return true;
}

void Bus::register_machine(const std::string& name, pid_t leader,
                           const std::string& root_directory) {
  const auto& b = sd();
  const std::string what = "systemd-machined: register machine " + name;
  Message m;
  check(what, b.new_method_call(bus_, &m.m, "org.freedesktop.machine1", "/org/freedesktop/machine1",
                                "org.freedesktop.machine1.Manager", "RegisterMachine"));
  check(what, b.append(m.m, "s", name.c_str()));
  check(what, b.append_array(m.m, 'y', nullptr, 0));  // no machine id: machined leaves it unset
  check(what, b.append(m.m, "ssus", "racker", "container", static_cast<uint32_t>(leader),
                       root_directory.c_str()));
  BusError err;
  Message reply;
  int r = b.call(bus_, m.m, usec(std::chrono::seconds(5)), &err.e, &reply.m);
  if (r < 0) fail(what, r, &err.e);
}

}  // namespace racker::runtime::systemd
