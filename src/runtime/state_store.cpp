#include "runtime/state_store.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <time.h>

#include <cerrno>
#include <cstdio>

#include "base/error.hpp"
#include "base/fs.hpp"
#include "base/strings.hpp"

namespace racker::runtime {

void validate_id(const std::string& id) {
  if (id.empty()) throw Error("container id must not be empty", EINVAL);
  if (id == "." || id == ".." || id.size() > 1024)
    throw Error("invalid container id \"" + id + "\"", EINVAL);
  for (char c : id) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-' || c == '.' || c == '+';
    if (!ok)
      throw Error("invalid container id \"" + id + "\": only [A-Za-z0-9_+.-] allowed", EINVAL);
  }
}

void StateStore::create_dir(const std::string& id, const std::string& first_file,
                            const std::string& content) const {
  mkdir_p(root_, 0711);
  // a state directory someone else made (a shared /tmp) could be swapped under us
  struct stat st;
  if (::lstat(root_.c_str(), &st) != 0) throw_errno("stat " + root_);
  if (!S_ISDIR(st.st_mode) || st.st_uid != ::geteuid())
    throw Error("state directory " + root_ + " is not a directory of yours (uid " +
                    std::to_string(::geteuid()) + "): remove it or pass --root",
                EPERM);
  // made under a name no id can have, then renamed: <root>/<id> never exists without its
  // first file (a runtime killed in between leaves only a "+new-" directory)
  std::string tmp = root_ + "/+new-" + id + "." + random_hex(8);
  if (::mkdir(tmp.c_str(), 0711) != 0) throw_errno("mkdir " + tmp);
  try {
    if (!first_file.empty()) write_file_atomic(tmp + "/" + first_file, content, 0600);
    if (::renameat2(AT_FDCWD, tmp.c_str(), AT_FDCWD, dir(id).c_str(), RENAME_NOREPLACE) != 0) {
      if (errno == EEXIST) throw Error("container \"" + id + "\" already exists", EEXIST);
      throw_errno("rename " + tmp + " to " + dir(id));
    }
  } catch (...) {
    remove_tree(tmp);
    throw;
  }
}

void StateStore::save(const ContainerRecord& r) const {
  nlohmann::json j = {{"id", r.id},
                      {"bundle", r.bundle},
                      {"rootfs", r.rootfs},
                      {"pid", r.pid},
                      {"start_time", r.start_time},
                      {"created", r.created},
                      {"owner", r.owner},
                      {"annotations", r.annotations},
                      {"cgroup", r.cgroup},
                      {"has_pid_ns", r.has_pid_ns}};
  write_file_atomic(dir(r.id) + "/state.json", j.dump(), 0600);
}

std::optional<ContainerRecord> StateStore::load(const std::string& id) const {
  auto text = read_file_if_exists(dir(id) + "/state.json");
  if (!text) return std::nullopt;
  try {
    auto j = nlohmann::json::parse(*text);
    ContainerRecord r;
    r.id = j.at("id").get<std::string>();
    r.bundle = j.at("bundle").get<std::string>();
    r.rootfs = j.value("rootfs", "");
    r.pid = j.at("pid").get<pid_t>();
    r.start_time = j.value("start_time", 0ULL);
    r.created = j.value("created", "");
    r.owner = j.value("owner", "");
    r.annotations = j.value("annotations", std::map<std::string, std::string>{});
    r.cgroup = j.value("cgroup", nlohmann::json());
    r.has_pid_ns = j.value("has_pid_ns", false);
    return r;
  } catch (const nlohmann::json::exception& e) {
    throw Error("corrupt state for container \"" + id + "\": " + e.what(), EINVAL);
  }
}

bool StateStore::exists(const std::string& id) const {
  return path_exists(dir(id));
}

std::vector<std::string> StateStore::ids() const {
  std::vector<std::string> out;
  DIR* d = ::opendir(root_.c_str());
  if (!d) return out;
  while (auto* e = ::readdir(d)) {
    std::string n = e->d_name;
    if (n == "." || n == ".." || n.find('+') != std::string::npos) continue;  // "+new-"
    if (e->d_type == DT_DIR || e->d_type == DT_UNKNOWN) out.push_back(n);
  }
  ::closedir(d);
  std::sort(out.begin(), out.end());
  return out;
}

void StateStore::remove(const std::string& id) const {
  remove_tree(dir(id));
}

void StateStore::remove_partial(const std::string& id) const {
  DIR* d = ::opendir(root_.c_str());
  if (!d) return;
  std::vector<std::string> doomed;
  std::string prefix = "+new-" + id + ".";
  while (auto* e = ::readdir(d))
    if (std::string_view(e->d_name).starts_with(prefix)) doomed.push_back(root_ + "/" + e->d_name);
  ::closedir(d);
  for (auto& p : doomed) remove_tree(p);
}

unsigned long long process_start_time(pid_t pid) {
  if (pid <= 0) return 0;
  auto stat = read_file_if_exists("/proc/" + std::to_string(pid) + "/stat");
  if (!stat) return 0;
  auto close = stat->rfind(')');
  if (close == std::string::npos) return 0;
  auto fields = split(stat->substr(close + 2), ' ');
  // fields[0] is the state (field 3); start time is field 22 -> index 19
  if (fields.size() < 20) return 0;
  if (fields[0] == "Z" || fields[0] == "X") return 0;
  return parse_uint(fields[19]).value_or(0);
}

}  // namespace racker::runtime
