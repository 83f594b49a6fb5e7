#include "engine/exec_cp.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <stdlib.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "base/error.hpp"
#include "base/fd.hpp"
#include "base/fs.hpp"
#include "base/strings.hpp"
#include "engine/containers.hpp"
#include "engine/run.hpp"
#include "image/image_store.hpp"
#include "runtime/container.hpp"
#include "runtime/mounts.hpp"

namespace racker::engine {
namespace {

// A file that is removed again when it goes out of scope.
struct TempFile {
  TempFile(std::string p, const std::string& content) : path(std::move(p)) {
    write_file_atomic(path, content, 0600);
  }
  ~TempFile() { ::unlink(path.c_str()); }
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;
  std::string path;
};

}  // namespace

int exec_in_container(const ExecRequest& req) {
  if (req.args.empty()) throw Error("exec: missing COMMAND", EINVAL, ErrorKind::invalid);
  ContainerStore store(req.store_root, req.state_root);
  auto c = store.find(req.container);
  if (!c.running() || c.status == ContainerStatus::paused)
    throw Error("container " + c.name() + " is not running", ESRCH, ErrorKind::conflict);
  std::string rootfs = c.dir + "/rootfs";
  runtime::ExecOptions o;
  o.args = req.args;
  o.env = req.env;
  o.cwd = req.workdir;
  if (!req.user.empty()) {
    auto [uid, gid] = resolve_user(rootfs, req.user);
    o.user = std::to_string(uid) + ":" + std::to_string(gid);
  }
  o.tty = req.tty;
  o.detach = req.detach;
  // a booted OS container: commands get the process a plain container would have (docker's
  // capabilities, the image's environment), not the init's
  std::optional<TempFile> process;
  if (auto base = read_file_if_exists(c.dir + "/command.json")) {
    auto proc = nlohmann::json::parse(*base);
    proc["args"] = req.args;
    proc["terminal"] = req.tty;
    for (auto& e : req.env) {
      std::string key = e.substr(0, e.find('='));
      auto& env = proc["env"];
      nlohmann::json kept = nlohmann::json::array();
      for (auto& x : env)
        if (x.get<std::string>().substr(0, x.get<std::string>().find('=')) != key)
          kept.push_back(x);
      kept.push_back(e);
      env = kept;
    }
    if (!req.workdir.empty()) proc["cwd"] = req.workdir;
    if (!o.user.empty()) {
      auto ids = split(o.user, ':');
      proc["user"] = {{"uid", std::stoul(ids[0])},
                      {"gid", ids.size() > 1 ? std::stoul(ids[1]) : 0UL}};
    }
    process.emplace(c.dir + "/exec-" + std::to_string(::getpid()) + ".json", proc.dump());
    o.process_file = process->path;
    // and the filter of a plain container, as the booted command has
    if (std::string f = command_seccomp_file(c.dir + "/command.json"); path_exists(f))
      o.seccomp_file = f;
  }
  if (req.detach && req.tty)
    throw Error("exec: -d with -t is not supported", EINVAL, ErrorKind::invalid);
  UniqueFd devnull = open_dev_null();
  std::optional<Redirect> in, out, err;
  if (!req.interactive || req.detach) in.emplace(0, devnull.get());
  if (req.detach) {
    out.emplace(1, devnull.get());
    err.emplace(2, devnull.get());
  }
  return runtime::Runtime(req.state_root).exec(c.id, o);
}

namespace {

struct Side {
  bool in_container = false;
  std::string path;  // host path, or the path inside the container
};

Side parse_side(const std::string& arg) {
  Side s;
  s.path = arg;
  auto colon = arg.find(':');
  // a local path may hold ':' when it starts with / or . (docker's rule)
  if (colon != std::string::npos && colon > 0 && arg[0] != '/' && arg[0] != '.' &&
      arg.substr(0, colon).find('/') == std::string::npos) {
    s.in_container = true;
    s.path = arg.substr(colon + 1);
  }
  return s;
}

std::string container_of(const std::string& arg) {
  return arg.substr(0, arg.find(':'));
}

// Where a path of one side is on the host: container paths through secure_join (symlinks
// resolved inside the rootfs).
struct Resolver {
  bool in_container = false;
  std::string rootfs;
  std::string operator()(const std::string& p) const {
    if (!in_container) return p.empty() ? "." : p;
    std::string abs = p.empty() || p[0] != '/' ? "/" + p : p;
    return runtime::secure_join(rootfs, abs);
  }
};

std::string base_name(std::string p) {
  while (p.size() > 1 && p.back() == '/') p.pop_back();
  if (p.ends_with("/.")) p.resize(p.size() - 2);
  while (p.size() > 1 && p.back() == '/') p.pop_back();
  auto slash = p.rfind('/');
  std::string b = slash == std::string::npos ? p : p.substr(slash + 1);
  return b == "." || b == ".." || b == "/" ? "" : b;
}

void set_times(const std::string& path, const struct stat& st) {
  struct timespec ts[2] = {st.st_atim, st.st_mtim};
  if (::utimensat(AT_FDCWD, path.c_str(), ts, AT_SYMLINK_NOFOLLOW) != 0)
    throw_errno("set times of " + path);
}

// Copies the entry at host path `from` (not following a symlink there) to the destination
// path `to` of the side `dst`, recursively.
void copy_entry(const std::string& from, const std::string& to, const Resolver& dst) {
  struct stat st;
  if (::lstat(from.c_str(), &st) != 0) throw_errno("stat " + from);
  std::string target = dst(to);
  if (S_ISDIR(st.st_mode)) {
    struct stat dt;
    if (::lstat(target.c_str(), &dt) == 0) {
      if (!S_ISDIR(dt.st_mode))
        throw Error("cannot overwrite non-directory " + to + " with a directory", ENOTDIR);
    } else if (::mkdir(target.c_str(), 0700) != 0) {
      throw_errno("mkdir " + to);
    }
    for (auto& n : dir_names(from)) copy_entry(from + "/" + n, to + "/" + n, dst);
    target = dst(to);
    if (::chmod(target.c_str(), st.st_mode & 07777) != 0) throw_errno("chmod " + to);
    set_times(target, st);
  } else if (S_ISREG(st.st_mode)) {
    struct stat dt;
    if (::lstat(target.c_str(), &dt) == 0 && S_ISDIR(dt.st_mode))
      throw Error("cannot overwrite directory " + to + " with a file", EISDIR);
    struct timespec ts[2] = {st.st_atim, st.st_mtim};
    copy_file(from, target, {.mode = st.st_mode & 07777, .follow_source = false, .times = ts});
  } else if (S_ISLNK(st.st_mode)) {
    char buf[PATH_MAX];
    ssize_t n = ::readlink(from.c_str(), buf, sizeof buf - 1);
    if (n < 0) throw_errno("readlink " + from);
    // the link itself, never what it points to: resolve only the parent
    auto slash = to.rfind('/');
    std::string parent = slash == std::string::npos ? "" : to.substr(0, slash);
    std::string link =
        (slash == std::string::npos ? dst(".") : dst(parent.empty() ? "/" : parent)) + "/" +
        to.substr(slash == std::string::npos ? 0 : slash + 1);
    struct stat dt;
    if (::lstat(link.c_str(), &dt) == 0) {
      if (S_ISDIR(dt.st_mode)) throw Error("cannot overwrite directory " + to, EISDIR);
      ::unlink(link.c_str());
    }
    if (::symlink(std::string(buf, static_cast<size_t>(n)).c_str(), link.c_str()) != 0)
      throw_errno("symlink " + to);
    set_times(link, st);
  } else {
    ::unlink(target.c_str());
    if (::mknod(target.c_str(), st.st_mode, st.st_rdev) != 0) throw_errno("mknod " + to);
    set_times(target, st);
  }
}

// The container's rootfs on the host: its mounted overlay, else the overlay mounted in a
// private mount namespace of this process.
std::string container_rootfs(const ContainerEntry& c, const std::string& store_root) {
  std::string rootfs = c.dir + "/rootfs";
  // the overlay, or the copy made where the kernel refused it (it is the rootfs itself)
  if (is_mount_point(rootfs) || path_exists(c.dir + "/flat")) return rootfs;
  if (c.running()) throw Error("container " + c.name() + " has no mounted rootfs", ENOENT);
  const std::string& image_id = c.rec.image_id;
  image::ImageStore images(store_root);
  auto rec = image_id.empty() ? std::nullopt : images.find(image_id);
  if (!rec)
    throw Error("image " + (c.rec.image.empty() ? image_id : c.rec.image) + " of container " +
                    c.name() + " is gone",
                ENOENT);
  if (!path_exists(c.dir + "/upper"))
    throw Error("container " + c.name() + " has no upper dir", ENOENT);
  if (::unshare(CLONE_NEWNS) != 0) throw_errno("unshare mount namespace");
  if (::mount(nullptr, "/", nullptr, MS_REC | MS_SLAVE, nullptr) != 0)
    throw_errno("make mounts private");
  mkdir_p(c.dir + "/work", 0755);
  mkdir_p(rootfs, 0755);
  mount_rootfs(images, *rec, c.dir, false, range_of(c.rec));
  return rootfs;
}

}  // namespace

void copy_files(const CopyRequest& req) {
  Side src = parse_side(req.src), dst = parse_side(req.dst);
  if (src.in_container == dst.in_container)
    throw Error(src.in_container ? "cp: copying between containers is not supported"
                                 : "cp: one of SRC and DST must be CONTAINER:PATH",
                EINVAL);
  ContainerStore store(req.store_root, req.state_root);
  auto c = store.find(container_of(src.in_container ? req.src : req.dst));
  std::string rootfs = container_rootfs(c, req.store_root);
  Resolver from{src.in_container, rootfs}, to{dst.in_container, rootfs};
  auto fill = [](Side& s) {
    if (s.path.empty()) s.path = std::string(s.in_container ? "/" : ".");
  };
  fill(src);
  fill(dst);

  std::string from_host = from(src.path);
  struct stat st;
  if (::lstat(from_host.c_str(), &st) != 0)
    throw_errno("cp: " + src.path + (src.in_container ? " in container " + c.name() : ""));
  bool contents = src.path == "." || src.path.ends_with("/.");
  std::string name = base_name(src.path);
  std::string target = dst.path;
  struct stat dt;
  bool dst_exists = ::stat(to(dst.path).c_str(), &dt) == 0;
  if (S_ISDIR(st.st_mode)) {
    if (dst_exists) {
      if (!S_ISDIR(dt.st_mode))
        throw Error("cp: cannot copy directory " + src.path + " to file " + dst.path, ENOTDIR);
      if (!contents && !name.empty()) target = dst.path + "/" + name;
    }
  } else {
    if (contents) throw Error("cp: " + src.path + " is not a directory", ENOTDIR);
    if (dst_exists && S_ISDIR(dt.st_mode)) {
      target = dst.path + "/" + name;
    } else if (!dst_exists && dst.path.ends_with("/")) {
      throw Error("cp: destination directory " + dst.path + " does not exist", ENOENT);
    }
  }
  if (!dst_exists) {
    // the parent must exist
    std::string t = target;
    while (t.size() > 1 && t.back() == '/') t.pop_back();
    auto slash = t.rfind('/');
    std::string parent = slash == std::string::npos ? "." : slash == 0 ? "/" : t.substr(0, slash);
    struct stat pt;
    if (::stat(to(parent).c_str(), &pt) != 0 || !S_ISDIR(pt.st_mode))
      throw Error("cp: destination directory " + parent + " does not exist", ENOENT);
    target = t;
  }
  copy_entry(from_host, target, to);
  // as docker cp: what lands in the container belongs to its root, in a user namespace the
  // range's first ids
  if (auto range = range_of(c.rec); range && dst.in_container) {
    std::vector<std::string> made = {target};
    if (contents) {
      made.clear();
      for (auto& n : dir_names(from_host)) made.push_back(target + "/" + n);
    }
    for (auto& m : made) shift_owners(to(m), IdRange{range->uid, range->gid, range->size}, true);
  }
}

}  // namespace racker::engine
