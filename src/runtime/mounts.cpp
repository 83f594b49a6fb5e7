#include "runtime/mounts.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <linux/mount.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <memory>
#include <sstream>

#include "base/error.hpp"
#include "base/fd.hpp"
#include "base/fs.hpp"
#include "base/strings.hpp"
#include "runtime/idmap.hpp"

namespace racker::runtime {
namespace {

struct FlagOpt {
  const char* name;
  bool clear;
  unsigned long flag;
};

constexpr FlagOpt kFlags[] = {
    {"defaults", false, 0},
    {"ro", false, MS_RDONLY},
    {"rw", true, MS_RDONLY},
    {"suid", true, MS_NOSUID},
    {"nosuid", false, MS_NOSUID},
    {"dev", true, MS_NODEV},
    {"nodev", false, MS_NODEV},
    {"exec", true, MS_NOEXEC},
    {"noexec", false, MS_NOEXEC},
    {"sync", false, MS_SYNCHRONOUS},
    {"async", true, MS_SYNCHRONOUS},
    {"dirsync", false, MS_DIRSYNC},
    {"remount", false, MS_REMOUNT},
    {"mand", false, MS_MANDLOCK},
    {"nomand", true, MS_MANDLOCK},
    {"atime", true, MS_NOATIME},
    {"noatime", false, MS_NOATIME},
    {"diratime", true, MS_NODIRATIME},
    {"nodiratime", false, MS_NODIRATIME},
    {"relatime", false, MS_RELATIME},
    {"norelatime", true, MS_RELATIME},
    {"strictatime", false, MS_STRICTATIME},
    {"nostrictatime", true, MS_STRICTATIME},
    {"lazytime", false, MS_LAZYTIME},
    {"nolazytime", true, MS_LAZYTIME},
    {"silent", false, MS_SILENT},
    {"loud", true, MS_SILENT},
};

struct PropOpt {
  const char* name;
  unsigned long flag;
};

constexpr PropOpt kProps[] = {
    {"private", MS_PRIVATE},       {"rprivate", MS_PRIVATE | MS_REC},
    {"shared", MS_SHARED},         {"rshared", MS_SHARED | MS_REC},
    {"slave", MS_SLAVE},           {"rslave", MS_SLAVE | MS_REC},
    {"unbindable", MS_UNBINDABLE}, {"runbindable", MS_UNBINDABLE | MS_REC},
};

struct AttrOpt {
  const char* name;
  bool clear;
  uint64_t attr;
};

constexpr AttrOpt kAttrs[] = {
    {"rro", false, MOUNT_ATTR_RDONLY},
    {"rrw", true, MOUNT_ATTR_RDONLY},
    {"rnosuid", false, MOUNT_ATTR_NOSUID},
    {"rsuid", true, MOUNT_ATTR_NOSUID},
    {"rnodev", false, MOUNT_ATTR_NODEV},
    {"rdev", true, MOUNT_ATTR_NODEV},
    {"rnoexec", false, MOUNT_ATTR_NOEXEC},
    {"rexec", true, MOUNT_ATTR_NOEXEC},
    {"rnodiratime", false, MOUNT_ATTR_NODIRATIME},
    {"rdiratime", true, MOUNT_ATTR_NODIRATIME},
    {"rnoatime", false, MOUNT_ATTR_NOATIME},
    {"ratime", true, MOUNT_ATTR_NOATIME},
    {"rrelatime", false, MOUNT_ATTR_RELATIME},
    {"rnorelatime", true, MOUNT_ATTR_RELATIME},
    {"rstrictatime", false, MOUNT_ATTR_STRICTATIME},
    {"rnostrictatime", true, MOUNT_ATTR_STRICTATIME},
};

// Bare (no "=") filesystem options we pass on as data, per filesystem type.
bool known_bare_data(const std::string& type, const std::string& opt) {
  if (type == "devpts") return opt == "newinstance";
  if (type == "tmpfs") return opt == "noswap";
  if (type == "cgroup") return true;  // controller names
  if (type == "proc" || type == "sysfs" || type == "mqueue" || type == "cgroup2" ||
      type == "bind" || type == "none" || type.empty())
    return false;
  return true;  // other filesystems (overlay, nfs, fuse...) know their own options
}

int do_mount(const std::string& src, const std::string& dst, const char* type, unsigned long flags,
             const std::string& data) {
  return ::mount(src.empty() ? nullptr : src.c_str(), dst.c_str(), type, flags,
                 data.empty() ? nullptr : data.c_str());
}

void must_mount(const std::string& src, const std::string& dst, const char* type,
                unsigned long flags, const std::string& data) {
  if (do_mount(src, dst, type, flags, data) != 0)
    throw_errno("mount " + (src.empty() ? std::string(type ? type : "none") : src) + " to " + dst);
}

// Flags the kernel locks on a mount (e.g. when it came from a less privileged namespace):
// a remount must keep them or it fails with EPERM.
unsigned long locked_flags(const std::string& path) {
  struct statvfs sv;
  if (::statvfs(path.c_str(), &sv) != 0) return 0;
  unsigned long f = 0;
  if (sv.f_flag & ST_NOSUID) f |= MS_NOSUID;
  if (sv.f_flag & ST_NODEV) f |= MS_NODEV;
  if (sv.f_flag & ST_NOEXEC) f |= MS_NOEXEC;
  if (sv.f_flag & ST_NOATIME) f |= MS_NOATIME;
  if (sv.f_flag & ST_NODIRATIME) f |= MS_NODIRATIME;
  if (sv.f_flag & ST_RELATIME) f |= MS_RELATIME;
  if (sv.f_flag & ST_RDONLY) f |= MS_RDONLY;
  return f;
}

void create_mountpoint(const std::string& dest, bool as_file) {
  struct stat st;
  if (::lstat(dest.c_str(), &st) == 0) return;
  auto slash = dest.rfind('/');
  if (slash != std::string::npos && slash > 0) mkdir_p(dest.substr(0, slash));
  if (as_file) {
    int fd = ::open(dest.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
    if (fd < 0 && errno != EEXIST) throw_errno("create mount point " + dest);
    if (fd >= 0) ::close(fd);
  } else {
    mkdir_p(dest);
  }
}

struct CgroupHierarchy {
  std::string mountpoint;  // host mount point
  std::string fstype;      // cgroup or cgroup2
  std::string options;     // super options (controllers)
  std::string path;        // our cgroup within that hierarchy
};

// The cgroup hierarchies mounted on the host and this process's place in each.
std::vector<CgroupHierarchy> host_cgroups() {
  std::vector<CgroupHierarchy> out;
  auto self = read_file("/proc/self/cgroup");
  std::map<std::string, std::string> paths;  // controllers -> path
  for (auto& line : split(self, '\n')) {
    auto parts = split(line, ':');
    if (parts.size() < 3) continue;
    std::string path = line.substr(parts[0].size() + parts[1].size() + 2);
    paths[parts[1]] = path;
  }
  std::istringstream mi(read_file("/proc/self/mountinfo"));
  std::string line;
  while (std::getline(mi, line)) {
    auto dash = line.find(" - ");
    if (dash == std::string::npos) continue;
    auto pre = split(line.substr(0, dash), ' ');
    auto post = split(line.substr(dash + 3), ' ');
    if (pre.size() < 5 || post.size() < 3) continue;
    if (post[0] != "cgroup" && post[0] != "cgroup2") continue;
    // the host's hierarchies only: not their copies in a rootfs being set up (a /sys bound
    // from the host, where sysfs cannot be mounted from a user namespace, brings them along)
    if (pre[4] != "/sys/fs/cgroup" && !pre[4].starts_with("/sys/fs/cgroup/")) continue;
    CgroupHierarchy h{pre[4], post[0], "", ""};
    if (post[0] == "cgroup2") {
      h.path = paths.count("") ? paths[""] : "/";
    } else {
      std::vector<std::string> ctrls;
      for (auto& o : split(post[2], ','))
        if (o != "rw" && o != "ro" && !o.starts_with("release_agent") && o != "xattr" &&
            o != "noprefix" && o != "clone_children" && o != "cpuset_v2_mode")
          ctrls.push_back(o);
      std::string key;
      for (size_t i = 0; i < ctrls.size(); ++i) key += (i ? "," : "") + ctrls[i];
      h.options = key;
      // /proc/self/cgroup lists co-mounted controllers in kernel order; match as a set.
      for (auto& [k, v] : paths) {
        auto a = split(k, ','), b = ctrls;
        std::sort(a.begin(), a.end());
        std::sort(b.begin(), b.end());
        if (a == b) h.path = v;
      }
      if (h.path.empty()) continue;
    }
    out.push_back(h);
  }
  return out;
}

void mount_cgroups(const RootfsPlan& plan, const std::string& dest, const MountOptions& o) {
  auto hier = host_cgroups();
  unsigned long ro = o.flags & MS_RDONLY;
  bool only_v2 =
      hier.size() == 1 && hier[0].fstype == "cgroup2" && hier[0].mountpoint == "/sys/fs/cgroup";
  if (only_v2) {
    if (plan.new_cgroup_ns) {
      if (do_mount("cgroup2", dest, "cgroup2", o.flags, "") != 0) {
        // EBUSY: the host's cgroup2 is already there (a /sys bound from the host, where sysfs
        // cannot be mounted from a user namespace, brings it along, locked) and the kernel
        // does not stack a superblock on its own root: cover it, then mount on the cover
        if (errno != EBUSY) throw_errno("mount cgroup2 to " + dest);
        must_mount("tmpfs", dest, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=755,size=4k");
        must_mount("cgroup2", dest, "cgroup2", o.flags, "");
      }
    } else {
      must_mount(join_under(hier[0].mountpoint, hier[0].path), dest, nullptr, MS_BIND | MS_REC, "");
      if (ro)
        must_mount("", dest, nullptr, MS_BIND | MS_REMOUNT | o.flags | locked_flags(dest), "");
    }
    return;
  }
  must_mount("tmpfs", dest, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=755");
  for (auto& h : hier) {
    if (!h.mountpoint.starts_with("/sys/fs/cgroup/")) continue;
    std::string name = h.mountpoint.substr(strlen("/sys/fs/cgroup/"));
    if (name.find('/') != std::string::npos) continue;
    std::string target = dest + "/" + name;
    mkdir_p(target);
    if (plan.new_cgroup_ns) {
      if (h.fstype == "cgroup2")
        must_mount("cgroup2", target, "cgroup2", o.flags, "");
      else
        must_mount("cgroup", target, "cgroup", o.flags, h.options);
    } else {
      must_mount(join_under(h.mountpoint, h.path), target, nullptr, MS_BIND | MS_REC, "");
      if (ro)
        must_mount("", target, nullptr, MS_BIND | MS_REMOUNT | o.flags | locked_flags(target), "");
    }
    // co-mounted controllers (cpu,cpuacct) get a symlink per controller, as on the host
    if (name.find(',') != std::string::npos) {
      for (auto& c : split(name, ',')) {
        std::string link = dest + "/" + c;
        if (!path_exists(link)) (void)!::symlink(name.c_str(), link.c_str());
      }
    }
  }
  if (ro)
    must_mount("", dest, nullptr, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC,
               "mode=755");
}

// Copies the entries of directory from into the (fresh, empty) directory to: files, dirs,
// symlinks and special files with their mode, owner and times. Nothing is resolved by path:
// every step is *at() from a directory fd, symlinks are recreated, never followed.
void copy_tree(int from, int to, const std::string& what) {
  UniqueFd dup(::fcntl(from, F_DUPFD_CLOEXEC, 0));
  if (!dup) throw_errno("tmpcopyup: " + what);
  DIR* d = ::fdopendir(dup.get());
  if (!d) throw_errno("tmpcopyup: read " + what);
  dup.release();
  std::unique_ptr<DIR, int (*)(DIR*)> dir(d, ::closedir);
  ::rewinddir(d);
  while (auto* e = ::readdir(d)) {
    std::string_view n = e->d_name;
    if (n == "." || n == "..") continue;
    std::string path = what + "/" + std::string(n);
    struct stat st;
    if (::fstatat(from, e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0)
      throw_errno("tmpcopyup: " + path);
    if (S_ISDIR(st.st_mode)) {
      if (::mkdirat(to, e->d_name, 0700) != 0) throw_errno("tmpcopyup: mkdir " + path);
      UniqueFd src(::openat(from, e->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
      UniqueFd dst(::openat(to, e->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
      if (!src || !dst) throw_errno("tmpcopyup: open " + path);
      copy_tree(src.get(), dst.get(), path);
    } else if (S_ISREG(st.st_mode)) {
      UniqueFd src(::openat(from, e->d_name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
      UniqueFd dst(
          ::openat(to, e->d_name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
      if (!src || !dst || !copy_all(src.get(), dst.get())) throw_errno("tmpcopyup: copy " + path);
    } else if (S_ISLNK(st.st_mode)) {
      std::string target(static_cast<size_t>(st.st_size) + 1, '\0');
      ssize_t len = ::readlinkat(from, e->d_name, target.data(), target.size());
      if (len < 0) throw_errno("tmpcopyup: readlink " + path);
      target.resize(static_cast<size_t>(len));
      if (::symlinkat(target.c_str(), to, e->d_name) != 0) throw_errno("tmpcopyup: " + path);
    } else if (::mknodat(to, e->d_name, st.st_mode, st.st_rdev) != 0) {
      throw_errno("tmpcopyup: mknod " + path);
    }
    if (::fchownat(to, e->d_name, st.st_uid, st.st_gid, AT_SYMLINK_NOFOLLOW) != 0 &&
        errno != EINVAL)  // an id not mapped in a user namespace: keep ours
      throw_errno("tmpcopyup: chown " + path);
    if (!S_ISLNK(st.st_mode) && ::fchmodat(to, e->d_name, st.st_mode & 07777, 0) != 0)
      throw_errno("tmpcopyup: chmod " + path);
    struct timespec times[2] = {st.st_atim, st.st_mtim};
    ::utimensat(to, e->d_name, times, AT_SYMLINK_NOFOLLOW);
  }
}

void mount_one(const RootfsPlan& plan, const oci::Mount& m, size_t index) {
  std::string where = "mounts[" + std::to_string(index) + "]";
  MountOptions o = parse_mount_options(m, where);
  std::string dest = secure_join(plan.rootfs, m.destination);
  bool is_bind = o.bind || m.type == "bind";
  UniqueFd below;  // tmpcopyup: the directory the tmpfs hides, still reachable through it
  try {
    if (m.type == "cgroup" || m.type == "cgroup2") {
      create_mountpoint(dest, false);
      mount_cgroups(plan, dest, o);
      return;
    }
    if (is_bind) {
      int tree = plan.sources && index < plan.sources->size() ? (*plan.sources)[index].get() : -1;
      struct stat st;
      if (tree >= 0 ? ::fstat(tree, &st) != 0 : ::stat(m.source.c_str(), &st) != 0)
        throw_errno("stat bind source " + m.source);
      create_mountpoint(dest, !S_ISDIR(st.st_mode));
      if (tree >= 0)
        attach_tree(tree, dest);
      else
        must_mount(m.source, dest, nullptr, MS_BIND | (o.recursive_bind ? MS_REC : 0), "");
      unsigned long want = o.flags & ~(MS_REMOUNT | MS_BIND | MS_REC);
      if (want != 0 || o.clear != 0) {
        unsigned long flags = (locked_flags(dest) & ~o.clear) | want;
        if (!plan.in_user_ns) flags = want;  // host root may drop what it likes
        must_mount("", dest, nullptr, MS_BIND | MS_REMOUNT | flags, "");
      }
    } else {
      create_mountpoint(dest, false);
      std::string data = o.data;
      std::string type = m.type.empty() ? "none" : m.type;
      if (type == "devpts" && plan.in_user_ns) {
        // gid=5 may not be mapped in a user namespace: drop it rather than fail
        std::string kept;
        for (auto& d : split(data, ','))
          if (!d.starts_with("gid=")) kept += (kept.empty() ? "" : ",") + d;
        data = kept;
      }
      std::string src = m.source.empty() ? type : m.source;
      if (o.copy_up) {
        below.reset(::open(dest.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
        if (!below) throw_errno("tmpcopyup: open " + m.destination);
      }
      if (do_mount(src, dest, type.c_str(), o.flags & ~MS_REMOUNT, data) != 0) {
        int err = errno;
        // sysfs/mqueue cannot be mounted from a user namespace that does not own the
        // network/ipc namespace: bind the host's instead, as runc does
        if (err == EPERM && (type == "sysfs" || type == "mqueue")) {
          std::string host = type == "sysfs" ? "/sys" : "/dev/mqueue";
          must_mount(host, dest, nullptr, MS_BIND | MS_REC, "");
          must_mount("", dest, nullptr,
                     MS_BIND | MS_REMOUNT | (o.flags & ~MS_REMOUNT) | locked_flags(dest), "");
        } else {
          throw_errno("mount " + type + " to " + m.destination, err);
        }
      }
    }
    if (o.copy_up) {
      UniqueFd top(::open(dest.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
      if (!top) throw_errno("tmpcopyup: open " + m.destination);
      copy_tree(below.get(), top.get(), m.destination);
    }
    if (o.propagation) must_mount("", dest, nullptr, o.propagation, "");
    if (o.attr_set || o.attr_clr) {
      struct mount_attr attr {};
      attr.attr_set = o.attr_set;
      attr.attr_clr = o.attr_clr;
      if (::syscall(SYS_mount_setattr, AT_FDCWD, dest.c_str(), AT_RECURSIVE, &attr, sizeof attr) !=
          0)
        throw_errno("mount_setattr " + m.destination);
    }
  } catch (const Error& e) {
    throw e.with_context(where + " (" + m.destination + ")");
  }
}

struct DefaultDev {
  const char* path;
  unsigned major, minor;
};
constexpr DefaultDev kDefaultDevices[] = {
    {"/dev/null", 1, 3},   {"/dev/zero", 1, 5},    {"/dev/full", 1, 7},
    {"/dev/random", 1, 8}, {"/dev/urandom", 1, 9}, {"/dev/tty", 5, 0},
};

void make_device(const RootfsPlan& plan, const std::string& path, char type, unsigned major,
                 unsigned minor, mode_t perm, uid_t uid, gid_t gid) {
  std::string dest = secure_join(plan.rootfs, path);
  auto slash = dest.rfind('/');
  mkdir_p(dest.substr(0, slash));
  if (plan.in_user_ns && type != 'p') {
    create_mountpoint(dest, true);
    must_mount(path, dest, nullptr, MS_BIND, "");
    return;
  }
  mode_t kind = type == 'b' ? S_IFBLK : type == 'p' ? S_IFIFO : S_IFCHR;
  ::unlink(dest.c_str());
  if (::mknod(dest.c_str(), kind | perm, makedev(major, minor)) != 0) throw_errno("mknod " + path);
  if (::chmod(dest.c_str(), perm) != 0) throw_errno("chmod " + path);
  if (::chown(dest.c_str(), uid, gid) != 0) throw_errno("chown " + path);
}

void setup_dev(const RootfsPlan& plan) {
  const auto& spec = *plan.spec;
  bool dev_is_bind = false;
  for (auto& m : spec.mounts)
    if (m.destination == "/dev" && (m.type == "bind" || parse_mount_options(m, "").bind))
      dev_is_bind = true;
  if (dev_is_bind) return;
  for (auto& d : kDefaultDevices) {
    bool overridden = false;
    if (spec.linux_)
      for (auto& cd : spec.linux_->devices) overridden |= cd.path == d.path;
    if (!overridden) make_device(plan, d.path, 'c', d.major, d.minor, 0666, 0, 0);
  }
  if (spec.linux_) {
    for (auto& d : spec.linux_->devices)
      make_device(plan, d.path, d.type == 'u' ? 'c' : d.type, static_cast<unsigned>(d.major),
                  static_cast<unsigned>(d.minor), d.file_mode.value_or(0666) & 07777,
                  d.uid.value_or(0), d.gid.value_or(0));
  }
  std::string dev = secure_join(plan.rootfs, "/dev");
  struct Link {
    const char* target;
    const char* name;
  };
  const Link links[] = {{"/proc/self/fd", "fd"},
                        {"/proc/self/fd/0", "stdin"},
                        {"/proc/self/fd/1", "stdout"},
                        {"/proc/self/fd/2", "stderr"}};
  for (auto& l : links) {
    std::string p = dev + "/" + l.name;
    if (::symlink(l.target, p.c_str()) != 0 && errno != EEXIST) throw_errno("symlink " + p);
  }
  if (path_exists("/proc/kcore")) (void)!::symlink("/proc/kcore", (dev + "/core").c_str());
  std::string ptmx = dev + "/ptmx";
  if (path_exists(dev + "/pts/ptmx")) {
    ::unlink(ptmx.c_str());
    if (::symlink("pts/ptmx", ptmx.c_str()) != 0) throw_errno("symlink " + ptmx);
  }
  if (plan.have_console) create_mountpoint(dev + "/console", true);
}

void pivot(const RootfsPlan& plan) {
  const std::string& root = plan.rootfs;
  if (plan.no_pivot) {
    if (::chdir(root.c_str()) != 0) throw_errno("chdir " + root);
    must_mount(root, "/", nullptr, MS_MOVE, "");
    if (::chroot(".") != 0) throw_errno("chroot " + root);
    if (::chdir("/") != 0) throw_errno("chdir /");
    return;
  }
  UniqueFd oldroot(::open("/", O_DIRECTORY | O_RDONLY | O_CLOEXEC));
  UniqueFd newroot(::open(root.c_str(), O_DIRECTORY | O_RDONLY | O_CLOEXEC));
  if (!oldroot || !newroot) throw_errno("open rootfs " + root);
  if (::fchdir(newroot.get()) != 0) throw_errno("chdir " + root);
  if (::syscall(SYS_pivot_root, ".", ".") != 0) throw_errno("pivot_root " + root);
  if (::fchdir(oldroot.get()) != 0) throw_errno("chdir to old root");
  // keep the unmount of the old root from propagating anywhere
  must_mount("", ".", nullptr, MS_SLAVE | MS_REC, "");
  if (::umount2(".", MNT_DETACH) != 0) throw_errno("unmount old root");
  if (::fchdir(newroot.get()) != 0 || ::chdir("/") != 0) throw_errno("chdir /");
}

// The mount holding `path` must not be shared for pivot_root: make it private.
void make_parent_mount_private(const std::string& path) {
  std::istringstream mi(read_file("/proc/self/mountinfo"));
  std::string line, best;
  bool shared = false;
  while (std::getline(mi, line)) {
    auto f = split(line, ' ');
    if (f.size() < 7) continue;
    const std::string& mp = f[4];
    bool under = path == mp || mp == "/" || path.starts_with(mp + "/");
    if (under && mp.size() >= best.size()) {
      best = mp;
      shared = line.find(" shared:") != std::string::npos;
    }
  }
  if (shared && !best.empty()) must_mount("", best, nullptr, MS_PRIVATE, "");
}

}  // namespace

MountOptions parse_mount_options(const oci::Mount& m, const std::string& where) {
  MountOptions o;
  for (size_t i = 0; i < m.options.size(); ++i) {
    const std::string& opt = m.options[i];
    bool found = false;
    if (opt == "bind" || opt == "rbind") {
      o.bind = true;
      o.recursive_bind |= opt == "rbind";
      continue;
    }
    if (opt == "tmpcopyup") {
      // podman puts it on /tmp, /var/tmp and /run of --read-only containers (runc has it)
      if (m.type != "tmpfs")
        throw Error("config.json: " + where + ".options[" + std::to_string(i) +
                        "]: tmpcopyup needs a tmpfs mount, not \"" + m.type + "\"",
                    EINVAL);
      o.copy_up = true;
      continue;
    }
    for (auto& f : kFlags) {
      if (opt == f.name) {
        found = true;
        if (f.clear) {
          o.flags &= ~f.flag;
          o.clear |= f.flag;
        } else {
          o.flags |= f.flag;
          o.clear &= ~f.flag;
        }
      }
    }
    for (auto& p : kProps)
      if (opt == p.name) {
        found = true;
        o.propagation = p.flag;
      }
    for (auto& a : kAttrs)
      if (opt == a.name) {
        found = true;
        if (a.clear)
          o.attr_clr |= a.attr;
        else
          o.attr_set |= a.attr;
      }
    if (found) continue;
    if (opt == "idmap" || opt == "ridmap") {
      o.idmap = true;
      continue;
    }
    if (opt.find('=') != std::string::npos || known_bare_data(m.type, opt)) {
      if (opt.starts_with("context=") || opt.starts_with("fscontext=") ||
          opt.starts_with("rootcontext="))
        if (!path_exists("/sys/fs/selinux/enforce")) continue;  // no SELinux: no labels
      o.data += (o.data.empty() ? "" : ",") + opt;
      continue;
    }
    throw Error("config.json: " + where + ".options[" + std::to_string(i) +
                    "]: unknown mount option \"" + opt + "\"",
                EINVAL);
  }
  if (m.type == "bind") o.bind = true;
  if (o.idmap && !o.bind)
    throw Error("config.json: " + where + ": id-mapped mounts must be bind mounts", EINVAL);
  if (!m.uid_mappings.empty() && !o.idmap)
    throw Error("config.json: " + where + ".uidMappings: needs the option \"idmap\" or \"ridmap\"",
                EINVAL);
  if (o.attr_clr & MOUNT_ATTR_RELATIME) o.attr_clr |= MOUNT_ATTR__ATIME;
  if (o.attr_set & (MOUNT_ATTR_NOATIME | MOUNT_ATTR_STRICTATIME | MOUNT_ATTR_RELATIME))
    o.attr_clr |= MOUNT_ATTR__ATIME;
  return o;
}

unsigned long propagation_flags(const std::string& name) {
  for (auto& p : kProps)
    if (name == p.name) return p.flag;
  return 0;
}

std::string secure_join(const std::string& root, const std::string& path) {
  // Walk component by component; symlinks are re-rooted at `root`; ".." never climbs
  // above it. Bounded to avoid symlink loops.
  std::vector<std::string> todo;
  for (auto& c : split(path, '/'))
    if (!c.empty() && c != ".") todo.push_back(c);
  std::reverse(todo.begin(), todo.end());
  std::vector<std::string> done;
  int links = 0;
  while (!todo.empty()) {
    std::string c = todo.back();
    todo.pop_back();
    if (c.empty() || c == ".") continue;
    if (c == "..") {
      if (!done.empty()) done.pop_back();
      continue;
    }
    std::string cur = root;
    for (auto& d : done) cur += "/" + d;
    cur += "/" + c;
    char buf[4096];
    ssize_t n = ::readlink(cur.c_str(), buf, sizeof buf - 1);
    if (n < 0 || ++links > 255) {
      done.push_back(c);
      continue;
    }
    std::string target(buf, static_cast<size_t>(n));
    if (!target.empty() && target[0] == '/') done.clear();
    auto parts = split(target, '/');
    for (auto it = parts.rbegin(); it != parts.rend(); ++it)
      if (!it->empty()) todo.push_back(*it);
  }
  std::string out = root;
  for (auto& d : done) out += "/" + d;
  return out;
}

std::vector<UniqueFd> open_mount_sources(const oci::Spec& spec, bool in_new_userns) {
  std::vector<UniqueFd> out(spec.mounts.size());
  UniqueFd container_ns;  // made once, for the "idmap" mounts without mappings of their own
  for (size_t i = 0; i < spec.mounts.size(); ++i) {
    const auto& m = spec.mounts[i];
    std::string where = "mounts[" + std::to_string(i) + "]";
    MountOptions o = parse_mount_options(m, where);
    if (!(o.bind || m.type == "bind") || (!o.idmap && !in_new_userns)) continue;
    // a source made after the clone (the container's own cgroup, which the engine binds
    // into booted systems) is mounted by path: it must be reachable then
    if (!o.idmap && !path_exists(m.source)) continue;
    try {
      UniqueFd ns;
      int ns_fd = -1;
      if (o.idmap && !m.uid_mappings.empty()) {
        ns = make_userns(m.uid_mappings, m.gid_mappings);
        ns_fd = ns.get();
      } else if (o.idmap) {
        if (!spec.linux_ || spec.linux_->uid_mappings.empty())
          throw Error("\"idmap\" without uidMappings needs a user namespace with mappings", EINVAL);
        if (!container_ns)
          container_ns = make_userns(spec.linux_->uid_mappings, spec.linux_->gid_mappings);
        ns_fd = container_ns.get();
      }
      out[i] = clone_tree(m.source, o.recursive_bind, ns_fd);
    } catch (const Error& e) {
      throw e.with_context("config.json: " + where + " (" + m.destination + ")");
    }
  }
  return out;
}

void prepare_rootfs(const RootfsPlan& plan) {
  const auto& spec = *plan.spec;
  unsigned long prop = MS_SLAVE | MS_REC;
  if (spec.linux_ && !spec.linux_->rootfs_propagation.empty()) {
    prop = propagation_flags(spec.linux_->rootfs_propagation);
    // an unbindable tree cannot be bind-mounted: it becomes unbindable after pivot_root
    if (prop & MS_UNBINDABLE) prop = MS_PRIVATE | MS_REC;
  }
  must_mount("", "/", nullptr, prop, "");
  make_parent_mount_private(plan.rootfs_host.empty() ? plan.rootfs : plan.rootfs_host);
  must_mount(plan.rootfs, plan.rootfs, nullptr, MS_BIND | MS_REC, "");
  for (size_t i = 0; i < spec.mounts.size(); ++i) mount_one(plan, spec.mounts[i], i);
  setup_dev(plan);
}

void finalize_rootfs(const RootfsPlan& plan) {
  const auto& spec = *plan.spec;
  pivot(plan);
  if (spec.linux_ && !spec.linux_->rootfs_propagation.empty()) {
    unsigned long p = propagation_flags(spec.linux_->rootfs_propagation);
    if (p & (MS_SHARED | MS_UNBINDABLE)) must_mount("", "/", nullptr, p, "");
  }
}

void protect_paths(const RootfsPlan& plan) {
  const auto& spec = *plan.spec;
  if (spec.linux_) {
    for (auto& p : spec.linux_->masked_paths) {
      struct stat st;
      if (::stat(p.c_str(), &st) != 0) continue;
      if (S_ISDIR(st.st_mode))
        must_mount("tmpfs", p, "tmpfs", MS_RDONLY, "size=0k");
      else
        must_mount("/dev/null", p, nullptr, MS_BIND, "");
    }
    for (auto& p : spec.linux_->readonly_paths) {
      if (!path_exists(p)) continue;
      must_mount(p, p, nullptr, MS_BIND | MS_REC, "");
      must_mount("", p, nullptr, MS_BIND | MS_REMOUNT | MS_RDONLY | locked_flags(p), "");
    }
  }
  if (spec.root.readonly)
    must_mount("", "/", nullptr, MS_BIND | MS_REMOUNT | MS_RDONLY | locked_flags("/"), "");
}

void setup_console(const std::string& slave_path) {
  create_mountpoint("/dev/console", true);
  must_mount(slave_path, "/dev/console", nullptr, MS_BIND, "");
}

}  // namespace racker::runtime
