// Layer unpacking (image/unpack.hpp, image/tar.hpp): each input is a layer blob (a tar stream,
// or gzip/zstd when it starts with their magic) unpacked into a scratch directory that is
// emptied after every input.
//
// Run as root (as racker unpacks), the target also checks containment, which unpack_layer
// promises for any input: in a private mount namespace the whole filesystem is made read-only
// except a fresh tmpfs for the scratch directory and the directories libFuzzer writes to (its
// corpus and artifacts). A write outside the target then fails with EROFS (a link out of it
// with EXDEV), which is reported as a bug, and the host is never touched. Without the
// privileges for that, the scratch directory is a plain temporary directory and only escapes
// into it are caught.
#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "base/error.hpp"
#include "base/fd.hpp"
#include "base/log.hpp"
#include "fuzz.hpp"
#include "image/digest.hpp"
#include "image/unpack.hpp"

using namespace racker::image;
using racker::fuzz::fail;

namespace {

namespace fs = std::filesystem;

std::string g_base;  // the per-process scratch directory
std::string g_root;  // g_base/root: the target of each unpack
bool g_sandboxed = false;
bool g_verbose = false;  // $RACKER_FUZZ_VERBOSE: print why each input was refused

// mount_setattr(2) (Linux 5.12): glibc 2.36 has no wrapper in every header set, so by number.
#ifndef SYS_mount_setattr
#define SYS_mount_setattr 442
#endif
struct MountAttr {
  uint64_t attr_set, attr_clr, propagation, userns_fd;
};
constexpr uint64_t kMountAttrRdonly = 0x00000001;
constexpr unsigned kAtRecursive = 0x8000;

bool set_read_only(const std::string& path, bool read_only) {
  MountAttr attr{};
  (read_only ? attr.attr_set : attr.attr_clr) = kMountAttrRdonly;
  return syscall(SYS_mount_setattr, AT_FDCWD, path.c_str(), kAtRecursive, &attr, sizeof attr) == 0;
}

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "fuzz_tar: %s: %s\n", what.c_str(), std::strerror(errno));
  std::exit(1);
}

std::string real(const std::string& path) {
  char buf[PATH_MAX];
  return realpath(path.c_str(), buf) ? std::string(buf) : std::string();
}

bool under(const std::string& path, const std::string& dir) {
  return path == dir || path.starts_with(dir + "/");
}

// Where libFuzzer writes: the corpus directories (positional arguments) and the artifact
// directory (-artifact_prefix / -exact_artifact_path, else the working directory).
std::vector<std::string> fuzzer_output_dirs(int argc, char** argv) {
  std::vector<std::string> dirs;
  bool artifacts_given = false;
  for (int i = 1; i < argc; ++i) {
    std::string_view a = argv[i];
    std::string dir;
    if (a.starts_with("-artifact_prefix=") || a.starts_with("-exact_artifact_path=")) {
      std::string value(a.substr(a.find('=') + 1));
      dir = value.ends_with('/') ? value : fs::path(value).parent_path().string();
      if (dir.empty()) dir = ".";
      artifacts_given = true;
    } else if (!a.starts_with('-')) {
      dir = std::string(a);
    } else {
      continue;
    }
    std::string r = real(dir);
    struct stat st;
    if (!r.empty() && stat(r.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) dirs.push_back(r);
  }
  if (!artifacts_given) dirs.push_back(real("."));
  return dirs;
}

// See the top of the file. Returns false (nothing changed) when it cannot be set up.
bool sandbox(int argc, char** argv) {
  if (geteuid() != 0 || getenv("RACKER_FUZZ_NO_SANDBOX")) return false;
  std::vector<std::string> writable = fuzzer_output_dirs(argc, argv);
  // The scratch tmpfs hides what it is mounted on (in this process only): not libFuzzer's dirs.
  std::string scratch_mount;
  for (const char* candidate : {"/dev/shm", "/tmp"}) {
    bool clash = false;
    for (const std::string& w : writable) clash |= under(w, candidate) || under(candidate, w);
    struct stat st;
    if (!clash && stat(candidate, &st) == 0 && S_ISDIR(st.st_mode)) {
      scratch_mount = candidate;
      break;
    }
  }
  if (scratch_mount.empty()) return false;
  char cwd[PATH_MAX];
  if (!getcwd(cwd, sizeof cwd)) die("getcwd");

  if (unshare(CLONE_NEWNS) < 0) {
    std::fprintf(stderr, "fuzz_tar: no mount namespace (%s): running without the sandbox\n",
                 std::strerror(errno));
    return false;
  }
  // From here on a failure leaves only this process's namespace half set up: give up.
  if (mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) < 0) die("make / private");
  if (!set_read_only("/", true)) die("make the filesystem read-only (mount_setattr)");
  for (const std::string& w : writable) {
    if (mount(w.c_str(), w.c_str(), nullptr, MS_BIND | MS_REC, nullptr) < 0) die("bind " + w);
    if (!set_read_only(w, false)) die("make " + w + " writable");
  }
  if (mount("racker-fuzz", scratch_mount.c_str(), "tmpfs", MS_NOSUID, "size=512m,mode=0700") < 0)
    die("mount a tmpfs on " + scratch_mount);
  // Relative paths resolve from the mounts now on top of the working directory.
  if (chdir(cwd) < 0) die("chdir");
  struct statvfs vfs;
  if (statvfs("/", &vfs) < 0 || !(vfs.f_flag & ST_RDONLY)) die("/ is still writable");
  g_base = scratch_mount + "/racker-fuzz-tar";
  if (mkdir(g_base.c_str(), 0700) < 0) die("mkdir " + g_base);
  return true;
}

// rm -rf path without recursion and with two descriptors at a time (a layer can nest directories
// thousands of levels deep: std::filesystem::remove_all holds one descriptor per level). Fine for
// the small trees a fuzz input makes: a directory is read again after each subdirectory.
bool remove_tree(const std::string& path, std::string& error) {
  auto failed = [&](const std::string& what) {
    error = what + ": " + std::strerror(errno);
    return false;
  };
  const int dir_flags = O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC;
  chmod(path.c_str(), 0700);  // without root, an entry's mode applies (the layer root's too)
  racker::UniqueFd cur(open(path.c_str(), dir_flags));
  if (!cur) return errno == ENOENT || failed("open " + path);
  std::vector<std::string> below;  // the path of cur under path
  for (;;) {
    std::string subdir;
    DIR* d = fdopendir(openat(cur.get(), ".", dir_flags));
    if (!d) return failed("read a directory in " + path);
    while (dirent* e = readdir(d)) {
      std::string_view name = e->d_name;
      if (name == "." || name == "..") continue;
      struct stat st;
      if (fstatat(cur.get(), e->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode)) {
        subdir = name;
        break;
      }
      if (unlinkat(cur.get(), e->d_name, 0) < 0) {
        closedir(d);
        return failed("unlink " + std::string(name));
      }
    }
    closedir(d);
    if (!subdir.empty()) {
      fchmodat(cur.get(), subdir.c_str(), 0700, 0);
      racker::UniqueFd next(openat(cur.get(), subdir.c_str(), dir_flags));
      if (!next) return failed("open " + subdir);
      cur = std::move(next);
      below.push_back(std::move(subdir));
      continue;
    }
    if (below.empty()) break;
    racker::UniqueFd parent(openat(cur.get(), "..", dir_flags));
    if (!parent || unlinkat(parent.get(), below.back().c_str(), AT_REMOVEDIR) < 0)
      return failed("remove " + below.back());
    cur = std::move(parent);
    below.pop_back();
  }
  cur.reset();
  return rmdir(path.c_str()) == 0 || failed("rmdir " + path);
}

void remove_scratch() {
  std::string error;
  remove_tree(g_base, error);
}

void reset_root() {
  std::string error;
  if (!remove_tree(g_root, error)) fail("cannot empty " + g_root + ": " + error);
  if (mkdir(g_root.c_str(), 0755) < 0) fail("mkdir " + g_root + ": " + std::strerror(errno));
}

// Nothing but the target may appear in the scratch directory.
void check_scratch() {
  std::error_code ec;
  for (const fs::directory_entry& e : fs::directory_iterator(g_base, ec))
    if (e.path() != fs::path(g_root)) fail("unpack wrote outside its target: " + e.path().string());
  if (ec) fail("cannot list " + g_base + ": " + ec.message());
}

bool compressed(std::string_view data) {
  return data.starts_with("\x1f\x8b") || data.starts_with("\x28\xb5\x2f\xfd");
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int* argc, char*** argv) {
  racker::log::configure("/dev/null", racker::log::Format::text, false);  // xattr warnings
  g_verbose = getenv("RACKER_FUZZ_VERBOSE") != nullptr;
  g_sandboxed = sandbox(*argc, *argv);
  if (!g_sandboxed) {
    const char* tmp = getenv("TMPDIR");
    std::string tmpl = std::string(tmp && *tmp ? tmp : "/dev/shm") + "/racker-fuzz-tar.XXXXXX";
    if (!mkdtemp(tmpl.data())) die("mkdtemp " + tmpl);
    g_base = tmpl;
    std::atexit(remove_scratch);
  }
  g_root = g_base + "/root";
  std::fprintf(stderr, "fuzz_tar: unpacking into %s (%s)\n", g_root.c_str(),
               g_sandboxed ? "sandbox: all else read-only" : "no sandbox");
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* bytes, size_t size) {
  std::string_view data(reinterpret_cast<const char*>(bytes), size);
  reset_root();
  racker::UniqueFd fd(memfd_create("fuzz-layer", MFD_CLOEXEC));
  if (!fd) fail(std::string("memfd_create: ") + std::strerror(errno));
  if (!racker::write_all(fd.get(), data.data(), data.size()) || lseek(fd.get(), 0, SEEK_SET) != 0)
    fail(std::string("write memfd: ") + std::strerror(errno));

  // No decompression bomb may fill the scratch tmpfs.
  ExpansionLimit limit{.min_bytes = 64 << 20, .ratio = 1, .what = "layer"};
  UnpackStats stats;
  bool ok = false;
  try {
    stats = unpack_layer(fd.get(), Compression::detect, g_root, {}, limit);
    ok = true;
  } catch (const racker::Error& e) {
    if (e.err() == EROFS || (g_sandboxed && e.err() == EXDEV))
      fail(std::string("unpack reached outside its target: ") + e.what());
    if (g_verbose) std::fprintf(stderr, "fuzz_tar: %s\n", e.what());
  } catch (const std::exception& e) {
    fail("unpack_layer: foreign exception " + racker::fuzz::type_name(e) + " escaped: " + e.what());
  }
  check_scratch();
  if (ok && g_verbose) std::fprintf(stderr, "fuzz_tar: unpacked %ju entries\n", stats.entries);
  if (ok && !compressed(data)) {
    if (stats.bytes != size)
      fail("unpack counted " + std::to_string(stats.bytes) + " bytes of " + std::to_string(size));
    if (stats.diff_id != sha256_digest(data))
      fail("diff_id " + stats.diff_id + " is not the digest of the stream");
  }
  return 0;
}
