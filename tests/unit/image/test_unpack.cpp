// Layer unpacking: tar formats, metadata, overlay whiteouts, compression, and containment of
// hostile archives. The archives are built here by a small tar writer.
#include <dirent.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <isa-l/igzip_lib.h>
#include <linux/fs.h>
#include <lzma.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>
#include <zstd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "base/error.hpp"
#include "base/fd.hpp"
#include "base/fs.hpp"
#include "image/digest.hpp"
#include "image/unpack.hpp"
#include "test_support.hpp"

using namespace racker;
using test::FdLimit;
using test::open_fds;
using namespace racker::image;

namespace {

constexpr int64_t kTime = 1700000000;

struct Hdr {
  std::string name{};
  char type = '0';
  uint64_t size = 0;
  uint32_t mode = 0644;
  uint32_t uid = 0;
  uint32_t gid = 0;
  int64_t mtime = kTime;
  std::string link{};
  uint32_t major = 0;
  uint32_t minor = 0;
  std::string prefix{};
  bool gnu = false;
};

// Writes ustar (or GNU) headers, PAX and GNU long-name meta headers, data and padding.
class TarWriter {
 public:
  std::string data;

  void header(const Hdr& h) {
    char b[512] = {};
    put(b, 0, 100, h.name);
    octal(b, 100, 8, h.mode);
    octal(b, 108, 8, h.uid);
    octal(b, 116, 8, h.gid);
    octal(b, 124, 12, h.size);
    octal(b, 136, 12, static_cast<uint64_t>(h.mtime));
    b[156] = h.type;
    put(b, 157, 100, h.link);
    if (h.gnu) {
      std::memcpy(b + 257, "ustar  \0", 8);
    } else {
      std::memcpy(b + 257,
                  "ustar\0"
                  "00",
                  8);
      put(b, 345, 155, h.prefix);
    }
    put(b, 265, 32, "root");
    put(b, 297, 32, "root");
    octal(b, 329, 8, h.major);
    octal(b, 337, 8, h.minor);
    std::memset(b + 148, ' ', 8);
    unsigned sum = 0;
    for (unsigned char c : b) sum += c;
    octal(b, 148, 7, sum);
    b[155] = ' ';
    data.append(b, 512);
  }
  void body(std::string_view d) {
    data.append(d);
    data.append((512 - d.size() % 512) % 512, '\0');
  }
  void file(const std::string& name, std::string_view content, uint32_t mode = 0644,
            uint32_t uid = 0, uint32_t gid = 0, int64_t mtime = kTime) {
    header({.name = name,
            .size = content.size(),
            .mode = mode,
            .uid = uid,
            .gid = gid,
            .mtime = mtime});
    body(content);
  }
  void dir(const std::string& name, uint32_t mode = 0755, uint32_t uid = 0, uint32_t gid = 0,
           int64_t mtime = kTime) {
    header({.name = name, .type = '5', .mode = mode, .uid = uid, .gid = gid, .mtime = mtime});
  }
  void symlink(const std::string& name, const std::string& target) {
    header({.name = name, .type = '2', .mode = 0777, .link = target});
  }
  void hardlink(const std::string& name, const std::string& target) {
    header({.name = name, .type = '1', .link = target});
  }
  void pax(const std::vector<std::pair<std::string, std::string>>& recs, char type = 'x') {
    std::string body_text;
    for (auto& [k, v] : recs) {
      size_t base = 1 + k.size() + 1 + v.size() + 1;
      size_t len = base + std::to_string(base).size();
      if (std::to_string(len).size() != std::to_string(base).size()) ++len;
      body_text += std::to_string(len) + " " + k + "=" + v + "\n";
    }
    header({.name = "PaxHeaders/x", .type = type, .size = body_text.size()});
    body(body_text);
  }
  void gnu_long(char type, const std::string& value) {
    std::string v = value + '\0';
    header({.name = "././@LongLink", .type = type, .size = v.size(), .gnu = true});
    body(v);
  }
  void end() { data.append(1024, '\0'); }

 private:
  static void put(char* b, size_t off, size_t len, std::string_view s) {
    std::memcpy(b + off, s.data(), std::min(len, s.size()));
  }
  static void octal(char* b, size_t off, size_t len, uint64_t v) {
    // len-1 zero-padded octal digits and a NUL
    for (size_t i = len - 1; i-- > 0; v >>= 3) b[off + i] = static_cast<char>('0' + (v & 7));
    b[off + len - 1] = '\0';
  }
};

std::string gzip(std::string_view in) {
  isal_zstream s;
  isal_deflate_init(&s);
  s.gzip_flag = IGZIP_GZIP;
  s.end_of_stream = 1;
  s.flush = NO_FLUSH;
  std::string out(in.size() + in.size() / 2 + 1024, '\0');
  s.next_in = reinterpret_cast<uint8_t*>(const_cast<char*>(in.data()));
  s.avail_in = static_cast<uint32_t>(in.size());
  s.next_out = reinterpret_cast<uint8_t*>(out.data());
  s.avail_out = static_cast<uint32_t>(out.size());
  EXPECT_EQ(isal_deflate(&s), COMP_OK);
  EXPECT_EQ(s.internal_state.state, ZSTATE_END);
  out.resize(s.total_out);
  return out;
}

std::string zstd(std::string_view in) {
  std::string out(ZSTD_compressBound(in.size()), '\0');
  size_t n = ZSTD_compress(out.data(), out.size(), in.data(), in.size(), 3);
  EXPECT_FALSE(ZSTD_isError(n));
  out.resize(n);
  return out;
}

std::string xz(std::string_view in) {
  std::string out(lzma_stream_buffer_bound(in.size()), '\0');
  size_t pos = 0;
  EXPECT_EQ(lzma_easy_buffer_encode(1, LZMA_CHECK_CRC64, nullptr,
                                    reinterpret_cast<const uint8_t*>(in.data()), in.size(),
                                    reinterpret_cast<uint8_t*>(out.data()), &pos, out.size()),
            LZMA_OK);
  out.resize(pos);
  return out;
}

// An fd reading the given bytes (a memfd, so no pipe size limits).
UniqueFd bytes_fd(std::string_view data) {
  UniqueFd fd(memfd_create("layer", MFD_CLOEXEC));
  EXPECT_TRUE(fd.valid());
  EXPECT_TRUE(write_all(fd.get(), data.data(), data.size()));
  EXPECT_EQ(lseek(fd.get(), 0, SEEK_SET), 0);
  return fd;
}

struct stat lstat_of(const std::string& p) {
  struct stat st {};
  EXPECT_EQ(lstat(p.c_str(), &st), 0) << p;
  return st;
}

bool exists(const std::string& p) {
  struct stat st;
  return lstat(p.c_str(), &st) == 0;
}

std::string xattr_of(const std::string& p, const char* name) {
  char buf[256];
  ssize_t n = lgetxattr(p.c_str(), name, buf, sizeof buf);
  return n < 0 ? std::string("<none>") : std::string(buf, static_cast<size_t>(n));
}

class Unpack : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "needs root (ownership, device nodes, trusted xattrs)";
    std::string tmpl = scratch_ + "/racker-unpack-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    base_ = tmpl;
    root_ = base_ + "/layer";
    ASSERT_EQ(mkdir(root_.c_str(), 0755), 0);
    // Host stand-ins next to the target: none of them may change.
    sentinel_ = base_ + "/sentinel";
    write_file_atomic(sentinel_, "original", 0644);
    outdir_ = base_ + "/outdir";
    ASSERT_EQ(mkdir(outdir_.c_str(), 0755), 0);
    sentinel_stat_ = lstat_of(sentinel_);
    outdir_stat_ = lstat_of(outdir_);
  }
  void TearDown() override {
    if (!base_.empty()) remove_tree(base_);
    if (!lower_.empty()) remove_tree(lower_);
  }

  UnpackStats unpack(const std::string& bytes, Compression c = Compression::none) {
    auto fd = bytes_fd(bytes);
    std::vector<std::string> lowers;
    if (!lower_.empty()) lowers.push_back(lower_);
    auto stats = unpack_layer(fd.get(), c, root_, lowers);
    fix_up_layer(root_, lowers, stats.fixups);  // as the store does once the lowers are complete
    return stats;
  }
  // A lower layer (unpacked already) for the next unpack(), made of t's entries.
  void lower(const std::string& bytes) {
    lower_ = base_ + "-lower";
    ASSERT_EQ(mkdir(lower_.c_str(), 0755), 0);
    auto fd = bytes_fd(bytes);
    unpack_layer(fd.get(), Compression::none, lower_);
  }
  std::string p(const std::string& rel) const { return root_ + "/" + rel; }

  void expect_host_untouched() {
    EXPECT_EQ(read_file(sentinel_), "original");
    struct stat st = lstat_of(sentinel_);
    EXPECT_EQ(st.st_ino, sentinel_stat_.st_ino);
    EXPECT_EQ(st.st_nlink, 1u);
    EXPECT_EQ(st.st_mode, sentinel_stat_.st_mode);
    EXPECT_EQ(st.st_uid, sentinel_stat_.st_uid);
    EXPECT_EQ(st.st_mtim.tv_sec, sentinel_stat_.st_mtim.tv_sec);
    st = lstat_of(outdir_);
    EXPECT_EQ(st.st_mode, outdir_stat_.st_mode);
    EXPECT_EQ(st.st_nlink, 2u);  // still empty of subdirectories
    EXPECT_EQ(st.st_mtim.tv_nsec, outdir_stat_.st_mtim.tv_nsec);
    EXPECT_EQ(xattr_of(outdir_, "trusted.overlay.opaque"), "<none>");
    // Nothing else appeared next to the target.
    std::vector<std::string> names;
    for (auto& n : {"layer", "sentinel", "outdir"}) names.push_back(n);
    size_t count = 0;
    if (DIR* d = opendir(base_.c_str())) {
      while (dirent* de = readdir(d))
        if (std::string_view(de->d_name) != "." && std::string_view(de->d_name) != "..") {
          ++count;
          EXPECT_NE(std::find(names.begin(), names.end(), de->d_name), names.end())
              << "unexpected host file " << de->d_name;
        }
      closedir(d);
    }
    EXPECT_EQ(count, 3u);
    EXPECT_FALSE(exists(outdir_ + "/victim"));
    EXPECT_FALSE(exists(outdir_ + "/passwd"));
  }

  void expect_throws(const std::string& bytes, const std::string& needle,
                     Compression c = Compression::none) {
    try {
      unpack(bytes, c);
      ADD_FAILURE() << "expected an error containing \"" << needle << "\"";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos)
          << "wanted \"" << needle << "\" in: " << e.what();
    }
  }

  std::string scratch_ = "/tmp";  // where the target and its neighbours are made
  std::string base_, root_, sentinel_, outdir_, lower_;
  struct stat sentinel_stat_ {
  }, outdir_stat_{};
};

// For layers of many thousands of directories: on tmpfs if there is one (as many mkdirs on a
// disk filesystem can take seconds, more so right after as many were deleted).
class UnpackLarge : public Unpack {
 protected:
  UnpackLarge() {
    if (access("/dev/shm", W_OK | X_OK) == 0) scratch_ = "/dev/shm";
  }
};

TEST_F(Unpack, RegularDirsSymlinksHardlinksAndMetadata) {
  TarWriter t;
  t.dir("./", 0750, 0, 0, kTime - 100);
  t.dir("home/", 0755, 0, 0, kTime - 5);
  t.dir("home/user/", 0700, 1000, 1001, kTime - 10);
  t.file("home/user/notes.txt", "hello", 0640, 1000, 1001, kTime - 20);
  t.symlink("home/user/link", "notes.txt");
  t.hardlink("home/user/hard", "home/user/notes.txt");
  t.file("usr/bin/su", "#!/bin/su", 04755, 0, 0);  // parents created implicitly
  t.file("usr/bin/wall", "wall", 02755, 0, 5);     // setgid, group tty
  t.dir("tmp/", 01777);
  t.header({.name = "dev/null", .type = '3', .mode = 0666, .major = 1, .minor = 3});
  t.header({.name = "dev/loop0", .type = '4', .mode = 0660, .gid = 6, .major = 7, .minor = 0});
  t.header({.name = "run/initctl", .type = '6', .mode = 0600});
  t.file("empty", "");
  std::string big(3 << 20, 'x');
  for (size_t i = 0; i < big.size(); i += 4096) big[i] = static_cast<char>('a' + i % 26);
  t.file("big.bin", big);
  t.end();

  UnpackStats st = unpack(t.data);
  EXPECT_EQ(st.entries, 14u);
  EXPECT_EQ(st.bytes, t.data.size());
  EXPECT_EQ(st.diff_id, sha256_digest(t.data));

  struct stat s = lstat_of(root_);
  EXPECT_EQ(s.st_mode & 07777, 0750u);
  EXPECT_EQ(s.st_mtim.tv_sec, kTime - 100);

  s = lstat_of(p("home/user"));
  EXPECT_TRUE(S_ISDIR(s.st_mode));
  EXPECT_EQ(s.st_mode & 07777, 0700u);
  EXPECT_EQ(s.st_uid, 1000u);
  EXPECT_EQ(s.st_gid, 1001u);
  EXPECT_EQ(s.st_mtim.tv_sec, kTime - 10);  // set after its contents were created
  EXPECT_EQ(lstat_of(p("home")).st_mtim.tv_sec, kTime - 5);

  s = lstat_of(p("home/user/notes.txt"));
  EXPECT_TRUE(S_ISREG(s.st_mode));
  EXPECT_EQ(s.st_mode & 07777, 0640u);
  EXPECT_EQ(s.st_uid, 1000u);
  EXPECT_EQ(s.st_gid, 1001u);
  EXPECT_EQ(s.st_mtim.tv_sec, kTime - 20);
  EXPECT_EQ(s.st_nlink, 2u);
  EXPECT_EQ(read_file(p("home/user/notes.txt")), "hello");
  EXPECT_EQ(lstat_of(p("home/user/hard")).st_ino, s.st_ino);

  char buf[64];
  ssize_t n = readlink(p("home/user/link").c_str(), buf, sizeof buf);
  ASSERT_GT(n, 0);
  EXPECT_EQ(std::string(buf, static_cast<size_t>(n)), "notes.txt");
  EXPECT_EQ(lstat_of(p("home/user/link")).st_mtim.tv_sec, kTime);

  EXPECT_EQ(lstat_of(p("usr/bin/su")).st_mode & 07777, 04755u);
  s = lstat_of(p("usr/bin/wall"));
  EXPECT_EQ(s.st_mode & 07777, 02755u);
  EXPECT_EQ(s.st_gid, 5u);
  EXPECT_EQ(lstat_of(p("usr/bin")).st_mode & 07777, 0755u);
  EXPECT_EQ(lstat_of(p("tmp")).st_mode & 07777, 01777u);

  s = lstat_of(p("dev/null"));
  EXPECT_TRUE(S_ISCHR(s.st_mode));
  EXPECT_EQ(s.st_rdev, makedev(1, 3));
  EXPECT_EQ(s.st_mode & 07777, 0666u);
  s = lstat_of(p("dev/loop0"));
  EXPECT_TRUE(S_ISBLK(s.st_mode));
  EXPECT_EQ(s.st_rdev, makedev(7, 0));
  EXPECT_EQ(s.st_gid, 6u);
  s = lstat_of(p("run/initctl"));
  EXPECT_TRUE(S_ISFIFO(s.st_mode));
  EXPECT_EQ(s.st_mode & 07777, 0600u);

  EXPECT_EQ(lstat_of(p("empty")).st_size, 0);
  EXPECT_EQ(read_file(p("big.bin")), big);
  expect_host_untouched();
}

TEST_F(Unpack, XattrsCapabilitiesAndPaxTimes) {
  // security.capability v2: cap_net_bind_service (bit 10) permitted + effective
  std::string cap(20, '\0');
  uint32_t words[5] = {0x02000001, 1u << 10, 0, 0, 0};
  std::memcpy(cap.data(), words, sizeof words);
  TarWriter t;
  t.pax({{"SCHILY.xattr.security.capability", cap},
         {"SCHILY.xattr.user.note", std::string("a\0b=c\n", 6)},
         {"LIBARCHIVE.xattr.user.sp%20ace", "aGkgdGhlcmU="},  // "hi there"
         {"SCHILY.xattr.trusted.overlay.opaque", "y"},        // never taken from archives
         {"mtime", "1700000001.123456789"},
         {"atime", "1600000000.5"}});
  t.file("bin/ping", "ELF", 04755, 0, 0);
  t.pax({{"SCHILY.xattr.trusted.overlay.redirect", "/etc"}, {"SCHILY.xattr.user.d", "dir"}});
  t.dir("d/", 0755);
  t.pax({{"SCHILY.xattr.trusted.l", "lnk"}});
  t.symlink("l", "bin/ping");
  t.end();
  unpack(t.data);

  std::string f = p("bin/ping");
  EXPECT_EQ(xattr_of(f, "security.capability"), cap);
  EXPECT_EQ(xattr_of(f, "user.note"), std::string("a\0b=c\n", 6));
  EXPECT_EQ(xattr_of(f, "user.sp ace"), "hi there");
  EXPECT_EQ(xattr_of(f, "trusted.overlay.opaque"), "<none>");
  struct stat s = lstat_of(f);
  EXPECT_EQ(s.st_mode & 07777, 04755u);  // chown did not clear it: chmod came after
  EXPECT_EQ(s.st_mtim.tv_sec, 1700000001);
  EXPECT_EQ(s.st_mtim.tv_nsec, 123456789);
  EXPECT_EQ(s.st_atim.tv_sec, 1600000000);
  EXPECT_EQ(s.st_atim.tv_nsec, 500000000);
  EXPECT_EQ(xattr_of(p("d"), "user.d"), "dir");
  EXPECT_EQ(xattr_of(p("d"), "trusted.overlay.redirect"), "<none>");
  EXPECT_EQ(xattr_of(p("l"), "trusted.l"), "lnk");  // on the symlink itself
  EXPECT_EQ(xattr_of(f, "trusted.l"), "<none>");
}

// Linux refuses user.* xattrs on symlinks: the error names the entry and the xattr.
TEST_F(Unpack, XattrErrorsNameTheEntry) {
  TarWriter t;
  t.pax({{"SCHILY.xattr.user.l", "lnk"}});
  t.symlink("l", "target");
  t.end();
  expect_throws(t.data, "entry \"l\": set xattr user.l");
}

TEST_F(Unpack, PaxAndGnuLongNamesAndUstarPrefix) {
  std::string d1(120, 'd'), f1(200, 'f'), f2(180, 'g'), target(300, 't');
  std::string pax_path = d1 + "/" + f1;
  std::string gnu_path = "gnu/" + std::string(150, 'n') + "/" + f2;
  TarWriter t;
  t.pax({{"path", pax_path}, {"uid", "4000000000"}, {"gid", "7"}});
  t.file("ignored-short-name", "pax");
  t.gnu_long('L', gnu_path);
  t.header({.name = "ignored", .size = 3, .gnu = true});
  t.body("gnu");
  t.gnu_long('L', "gnu/longlink");
  t.gnu_long('K', target);
  t.header({.name = "x", .type = '2', .link = "short", .gnu = true});
  t.header({.name = "file.txt", .size = 6, .prefix = "pre/fix"});
  t.body("prefix");
  t.pax({{"uid", "42"}}, 'g');  // global: applies to every later entry
  t.file("g1", "1");
  t.file("g2", "2", 0644, 7, 7);
  t.end();
  unpack(t.data);

  EXPECT_EQ(read_file(p(pax_path)), "pax");
  EXPECT_EQ(lstat_of(p(pax_path)).st_uid, 4000000000u);
  EXPECT_EQ(lstat_of(p(pax_path)).st_gid, 7u);
  EXPECT_FALSE(exists(p("ignored-short-name")));
  EXPECT_EQ(read_file(p(gnu_path)), "gnu");
  char buf[512];
  ssize_t n = readlink(p("gnu/longlink").c_str(), buf, sizeof buf);
  ASSERT_GT(n, 0);
  EXPECT_EQ(std::string(buf, static_cast<size_t>(n)), target);
  EXPECT_EQ(read_file(p("pre/fix/file.txt")), "prefix");
  EXPECT_EQ(lstat_of(p("g1")).st_uid, 42u);
  EXPECT_EQ(lstat_of(p("g2")).st_uid, 42u);
  EXPECT_EQ(lstat_of(p("g2")).st_gid, 7u);
}

TEST_F(Unpack, WhiteoutsBecomeOverlayWhiteouts) {
  TarWriter l;
  l.dir("etc/");
  l.file("etc/motd", "hello");
  l.dir("gone-dir/");
  l.file("keep", "lower");
  l.end();
  lower(l.data);
  TarWriter t;
  t.dir("etc/");
  t.file("etc/.wh.motd", "");
  t.dir("var/cache/");
  t.file("var/cache/.wh..wh..opq", "");
  t.file("var/cache/fresh", "new");
  t.file(".wh..wh.plnk", "");  // AUFS metadata: ignored
  t.file(".wh.gone-dir", "");
  t.file("keep", "k");
  t.file(".wh.keep", "");         // whiteouts only hide lower layers, never this one's entries
  t.file("etc/.wh.no-such", "");  // hides nothing: no phantom entry in the overlay
  t.end();
  unpack(t.data);
  EXPECT_FALSE(exists(p("etc/no-such")));

  struct stat s = lstat_of(p("etc/motd"));
  EXPECT_TRUE(S_ISCHR(s.st_mode));
  EXPECT_EQ(s.st_rdev, makedev(0, 0));
  EXPECT_TRUE(S_ISCHR(lstat_of(p("gone-dir")).st_mode));
  EXPECT_FALSE(exists(p("etc/.wh.motd")));
  EXPECT_FALSE(exists(p("var/cache/.wh..wh..opq")));
  EXPECT_FALSE(exists(p(".wh..wh.plnk")));
  EXPECT_FALSE(exists(p("plnk")));
  EXPECT_EQ(xattr_of(p("var/cache"), "trusted.overlay.opaque"), "y");
  EXPECT_EQ(xattr_of(p("var"), "trusted.overlay.opaque"), "<none>");
  EXPECT_EQ(read_file(p("var/cache/fresh")), "new");
  EXPECT_EQ(read_file(p("keep")), "k");
}

TEST_F(Unpack, LaterEntriesReplaceEarlierOnes) {
  TarWriter t;
  t.file("a", "first");
  t.file("a", "second", 0600);
  t.dir("d/");
  t.file("d/inner", "kept");
  t.dir("d/", 0700);  // a directory over a directory keeps its contents
  t.dir("x/");
  t.file("x/old", "gone");
  t.file("x", "file over dir");
  t.file("y", "dir over file");
  t.dir("y/");
  t.file("y/z", "z");
  t.symlink("s", "a");
  t.file("s", "file over symlink");
  t.symlink("sd", "d");
  t.file("sd/via-link", "v");  // the parent symlink is followed, inside the root
  t.symlink("sd", "x");        // then replaced: later entries must not use the old dir
  t.hardlink("h", "a");
  t.hardlink("h", "h");
  t.end();
  unpack(t.data);

  EXPECT_EQ(read_file(p("a")), "second");
  EXPECT_EQ(lstat_of(p("a")).st_mode & 07777, 0600u);
  EXPECT_EQ(read_file(p("d/inner")), "kept");
  EXPECT_EQ(lstat_of(p("d")).st_mode & 07777, 0700u);
  EXPECT_EQ(read_file(p("x")), "file over dir");
  EXPECT_EQ(read_file(p("y/z")), "z");
  EXPECT_TRUE(S_ISREG(lstat_of(p("s")).st_mode));
  EXPECT_EQ(read_file(p("s")), "file over symlink");
  EXPECT_EQ(read_file(p("d/via-link")), "v");
  EXPECT_TRUE(S_ISLNK(lstat_of(p("sd")).st_mode));
  EXPECT_EQ(lstat_of(p("h")).st_ino, lstat_of(p("a")).st_ino);
}

// A hostile layer nests directories far deeper than PATH_MAX allows: each chain of 2,000 levels
// continues through a symlink to the deepest level of the one before. A later entry replaces the
// top directory with a file; removing the old tree must not take a stack frame or a descriptor
// per level (a crash, or EMFILE under a low descriptor limit).
TEST_F(UnpackLarge, ReplacingAVeryDeepDirectoryTreeNeedsFewDescriptors) {
  constexpr int kLevels = 2000, kChains = 3;
  std::string chain = "a";  // a/a/.../a: kLevels components, under PATH_MAX with "s2/"
  for (int i = 1; i < kLevels; ++i) chain += "/a";
  TarWriter t;
  t.dir("d/");
  std::string prev = "d";
  for (int c = 0; c < kChains; ++c) {
    t.pax({{"path", prev + "/" + chain + "/f"}});
    t.file("placeholder", "leaf");  // the parents are created implicitly
    if (c + 1 == kChains) break;
    std::string link = "s" + std::to_string(c + 1);
    t.pax({{"linkpath", prev + "/" + chain}});
    t.symlink(link, "placeholder");
    prev = link;
  }
  t.file("d", "file over a deep tree");
  t.end();

  size_t fds = open_fds();
  {
    FdLimit limit(64);  // one descriptor per level would run out at once
    try {
      unpack(t.data);
    } catch (const Error& e) {
      ADD_FAILURE() << e.what();
    }
  }
  EXPECT_EQ(open_fds(), fds);

  ASSERT_TRUE(S_ISREG(lstat_of(p("d")).st_mode));
  EXPECT_EQ(read_file(p("d")), "file over a deep tree");  // so the old tree is all gone
  std::vector<std::string> names;
  if (DIR* d = opendir(root_.c_str())) {
    while (dirent* de = readdir(d))
      if (std::string_view(de->d_name) != "." && std::string_view(de->d_name) != "..")
        names.push_back(de->d_name);
    closedir(d);
  }
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{"d", "s1", "s2"}));
  EXPECT_TRUE(S_ISLNK(lstat_of(p("s2")).st_mode));  // dangling now
  EXPECT_EQ(lstat_of(root_).st_nlink, 2u);
  expect_host_untouched();
}

// The same removal failing deep down (at an immutable file) is a clean error naming the entry,
// with no descriptor left open.
TEST_F(UnpackLarge, FailingToRemoveADeepTreeIsACleanError) {
  constexpr int kLevels = 3000;
  int fd = open(root_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  for (int i = 0; i < kLevels; ++i) {
    ASSERT_EQ(mkdirat(fd, "d", 0755), 0);
    int next = openat(fd, "d", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    close(fd);
    ASSERT_GE(next, 0);
    fd = next;
  }
  auto set_immutable = [](int dirfd, bool on) {
    int f = openat(dirfd, "stuck", O_RDONLY | O_CREAT | O_CLOEXEC, 0644);
    int flags = 0;
    bool ok = f >= 0 && ioctl(f, FS_IOC_GETFLAGS, &flags) == 0;
    flags = on ? flags | FS_IMMUTABLE_FL : flags & ~FS_IMMUTABLE_FL;
    ok = ok && ioctl(f, FS_IOC_SETFLAGS, &flags) == 0;
    if (f >= 0) close(f);
    return ok;
  };
  struct Bottom {  // kept open: the flag is cleared again whatever happens, for TearDown
    int fd;
    std::function<bool(int, bool)> set;
    ~Bottom() {
      set(fd, false);
      close(fd);
    }
  } bottom{fd, set_immutable};
  if (!set_immutable(fd, true)) GTEST_SKIP() << "cannot make an immutable file here";
  TarWriter t;
  t.file("d", "file over a deep tree");
  t.end();

  size_t fds = open_fds();
  {
    FdLimit limit(64);
    expect_throws(t.data, "entry \"d\": remove stuck: Operation not permitted");
  }
  EXPECT_EQ(open_fds(), fds);
  EXPECT_TRUE(S_ISDIR(lstat_of(p("d")).st_mode));
  expect_host_untouched();
}

// A hardlink replacing a directory: its source is resolved again once the directory is gone.
TEST_F(Unpack, HardlinkReplacingADirectory) {
  TarWriter t;
  t.file("src/a", "a");
  t.dir("x/");
  t.file("x/y", "y");
  t.hardlink("x", "src/a");
  t.end();
  unpack(t.data);
  EXPECT_EQ(read_file(p("x")), "a");
  EXPECT_EQ(lstat_of(p("x")).st_ino, lstat_of(p("src/a")).st_ino);

  TarWriter u;  // the source was inside the directory replaced
  u.dir("w/");
  u.file("w/y", "y");
  u.hardlink("w", "w/y");
  u.end();
  expect_throws(u.data, "directory \"w\" is not in the layer");
}

TEST_F(Unpack, SetgidParentsDoNotLeakTheirGroupOrBit) {
  TarWriter t;
  t.dir("srv/", 02775, 0, 50);
  t.file("srv/f", "f", 0644, 0, 0);     // would inherit gid 50 without an explicit chown
  t.dir("srv/sub/", 0755, 0, 0);        // would inherit gid 50 and the setgid bit
  t.file("srv/sub/deep/g", "g", 0600);  // implicit parent inside a setgid tree
  t.file("srv/h", "h", 0644, 0, 50);
  t.end();
  unpack(t.data);
  struct stat s = lstat_of(p("srv"));
  EXPECT_EQ(s.st_mode & 07777, 02775u);
  EXPECT_EQ(s.st_gid, 50u);
  EXPECT_EQ(lstat_of(p("srv/f")).st_gid, 0u);
  s = lstat_of(p("srv/sub"));
  EXPECT_EQ(s.st_mode & 07777, 0755u);
  EXPECT_EQ(s.st_gid, 0u);
  s = lstat_of(p("srv/sub/deep/g"));
  EXPECT_EQ(s.st_mode & 07777, 0600u);
  EXPECT_EQ(s.st_gid, 0u);
  EXPECT_EQ(lstat_of(p("srv/h")).st_gid, 50u);
}

TEST_F(Unpack, DirectoryTimesGoToTheRightDirectory) {
  TarWriter t;
  t.dir("b/", 0755, 0, 0, kTime - 2);
  t.dir("a/", 0755, 0, 0, kTime - 1);
  t.symlink("a", "b");  // replaces the directory a
  t.file("a/x", "x");   // lands in b
  t.end();
  unpack(t.data);
  EXPECT_TRUE(S_ISLNK(lstat_of(p("a")).st_mode));
  EXPECT_EQ(read_file(p("b/x")), "x");
  EXPECT_EQ(lstat_of(p("b")).st_mtim.tv_sec, kTime - 2);
}

// --- compression and digests ---

std::string sample_csv() {
  std::string csv;
  for (int i = 0; i < 200000; ++i) csv += std::to_string(i) + ",";
  return csv;
}

std::string sample_tar() {
  TarWriter t;
  t.dir("data/");
  t.file("data/numbers.csv", sample_csv());
  t.file("data/small", "small");
  t.end();
  return t.data;
}

TEST_F(Unpack, AllCompressionsGiveTheSameTreeAndDiffId) {
  std::string tar = sample_tar();
  std::string want = sha256_digest(tar);
  struct Case {
    std::string bytes;
    Compression c;
  };
  std::vector<Case> cases = {{tar, Compression::none},       {tar, Compression::detect},
                             {gzip(tar), Compression::gzip}, {gzip(tar), Compression::detect},
                             {zstd(tar), Compression::zstd}, {zstd(tar), Compression::detect},
                             {xz(tar), Compression::xz},     {xz(tar), Compression::detect}};
  for (auto& c : cases) {
    remove_tree(root_);
    ASSERT_EQ(mkdir(root_.c_str(), 0755), 0);
    UnpackStats st = unpack(c.bytes, c.c);
    EXPECT_EQ(st.diff_id, want);
    EXPECT_EQ(st.bytes, tar.size());
    EXPECT_EQ(st.entries, 3u);
    EXPECT_EQ(read_file(p("data/small")), "small");
    EXPECT_EQ(read_file(p("data/numbers.csv")), sample_csv());
  }
}

TEST_F(Unpack, MultiMemberGzipMultiFrameZstdAndTrailingData) {
  std::string tar = sample_tar();
  std::string tail(4096, 'T');  // after the end-of-archive marker: drained into the digest
  std::string whole = tar + tail;
  size_t cut = 70001;
  std::string gz =
      gzip(std::string_view(whole).substr(0, cut)) + gzip(std::string_view(whole).substr(cut));
  UnpackStats st = unpack(gz, Compression::detect);
  EXPECT_EQ(st.diff_id, sha256_digest(whole));
  EXPECT_EQ(st.bytes, whole.size());
  EXPECT_EQ(read_file(p("data/small")), "small");

  remove_tree(root_);
  ASSERT_EQ(mkdir(root_.c_str(), 0755), 0);
  std::string zs =
      zstd(std::string_view(whole).substr(0, cut)) + zstd(std::string_view(whole).substr(cut));
  st = unpack(zs, Compression::zstd);
  EXPECT_EQ(st.diff_id, sha256_digest(whole));

  remove_tree(root_);
  ASSERT_EQ(mkdir(root_.c_str(), 0755), 0);
  std::string x =
      xz(std::string_view(whole).substr(0, cut)) + xz(std::string_view(whole).substr(cut));
  st = unpack(x, Compression::detect);  // concatenated streams, as xz -d reads them
  EXPECT_EQ(st.diff_id, sha256_digest(whole));
}

std::string numbered(const char* prefix, int i) {
  std::string s = prefix;  // (not prefix + to_string: g++ 12 raises a false -Wrestrict)
  s += std::to_string(i);
  return s;
}

// Writes bytes into a pipe in pieces, pausing so the reader sees each piece on its own.
UnpackStats unpack_from_pipe(const std::string& bytes, size_t piece, const std::string& root) {
  int fds[2];
  EXPECT_EQ(pipe2(fds, O_CLOEXEC), 0);
  UniqueFd rd(fds[0]), wr(fds[1]);
  std::thread writer([&] {
    for (size_t i = 0; i < bytes.size(); i += piece) {
      if (!write_all(wr.get(), bytes.data() + i, std::min(piece, bytes.size() - i))) break;
      if (piece < 4096) usleep(1000);
    }
    wr.reset();
  });
  try {
    UnpackStats st = unpack_layer(rd.get(), Compression::detect, root);
    writer.join();
    return st;
  } catch (...) {
    rd.reset();
    writer.join();
    throw;
  }
}

TEST_F(Unpack, ReadsFromAPipe) {
  std::string tar = sample_tar();
  UnpackStats st = unpack_from_pipe(gzip(tar), 1 << 16, root_);
  EXPECT_EQ(st.diff_id, sha256_digest(tar));
  EXPECT_EQ(read_file(p("data/numbers.csv")), sample_csv());

  // 700-byte pieces: tar headers straddle the chunks the reader gets.
  TarWriter t;
  for (int i = 0; i < 12; ++i) t.file(numbered("f", i), std::string(300 + i, 'a' + i));
  t.end();
  remove_tree(root_);
  ASSERT_EQ(mkdir(root_.c_str(), 0755), 0);
  st = unpack_from_pipe(t.data, 700, root_);
  EXPECT_EQ(st.diff_id, sha256_digest(t.data));
  EXPECT_EQ(st.entries, 12u);
  for (int i = 0; i < 12; ++i)
    EXPECT_EQ(read_file(p(numbered("f", i))), std::string(300 + i, 'a' + i));
}

TEST_F(Unpack, ErrorDoesNotWaitForASlowSender) {
  // The sender keeps the pipe open after a bad header: the unpack must fail now, not at EOF.
  TarWriter t;
  t.file("a", "a");
  std::string bad = t.data;
  bad[0] ^= 1;
  int fds[2];
  ASSERT_EQ(pipe2(fds, O_CLOEXEC), 0);
  UniqueFd rd(fds[0]), wr(fds[1]);
  ASSERT_TRUE(write_all(wr.get(), bad.data(), bad.size()));
  auto start = std::chrono::steady_clock::now();
  EXPECT_THROW(unpack_layer(rd.get(), Compression::none, root_), Error);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
}

TEST_F(Unpack, EmptyStreamIsAnEmptyLayer) {
  UnpackStats st = unpack("");
  EXPECT_EQ(st.entries, 0u);
  EXPECT_EQ(st.diff_id, sha256_digest(""));
  TarWriter t;
  t.end();
  st = unpack(gzip(t.data), Compression::gzip);
  EXPECT_EQ(st.diff_id, sha256_digest(t.data));
}

// --- hostile archives: each must fail or stay inside the target; the host never changes ---

TEST_F(Unpack, AbsolutePathStaysInside) {
  std::string evil = "/tmp/racker-evil-" + std::to_string(getpid());
  TarWriter t;
  t.file(evil, "evil");
  t.file(sentinel_, "pwned");  // the sentinel's own absolute path
  t.end();
  unpack(t.data);
  EXPECT_FALSE(exists(evil));
  EXPECT_EQ(read_file(p(evil.substr(1))), "evil");
  EXPECT_EQ(read_file(p(sentinel_.substr(1))), "pwned");
  expect_host_untouched();
}

TEST_F(Unpack, DotDotStaysInside) {
  TarWriter t;
  t.file("../../sentinel", "pwned");
  t.file("../sentinel", "pwned");
  t.file("a/../../../../outdir/victim", "pwned");
  t.dir("../outdir/", 0777);
  t.end();
  unpack(t.data);
  EXPECT_EQ(read_file(p("sentinel")), "pwned");
  EXPECT_EQ(read_file(p("outdir/victim")), "pwned");
  expect_host_untouched();
}

TEST_F(Unpack, SymlinkedParentsResolveInsideTheRoot) {
  std::string rel_out = "../../../../../../../../.." + outdir_;
  TarWriter t;
  t.symlink("root", "/");
  t.file("root/racker-evil", "1");
  t.symlink("up", "../../..");
  t.file("up/racker-evil-2", "2");
  t.symlink("out", outdir_);  // absolute, to a real host directory
  t.file("out/victim", "3");
  t.symlink("rout", rel_out);
  t.file("rout/passwd", "4");
  t.dir("out/", 0777);  // replaces the symlink, never chmods its target
  t.end();
  unpack(t.data);
  EXPECT_EQ(read_file(p("racker-evil")), "1");
  EXPECT_EQ(read_file(p("racker-evil-2")), "2");
  EXPECT_FALSE(exists("/racker-evil"));
  EXPECT_FALSE(exists("/racker-evil-2"));
  EXPECT_EQ(read_file(p(outdir_.substr(1) + "/victim")), "3");
  EXPECT_EQ(read_file(p(outdir_.substr(1) + "/passwd")), "4");
  EXPECT_TRUE(S_ISDIR(lstat_of(p("out")).st_mode));
  expect_host_untouched();
}

TEST_F(Unpack, FinalSymlinkIsReplacedNeverFollowed) {
  TarWriter t;
  t.symlink("f", sentinel_);
  t.file("f", "pwned", 0777);
  t.symlink("d", outdir_);
  t.dir("d/", 0777);
  t.symlink("n", sentinel_);
  t.header({.name = "n", .type = '6', .mode = 0666});
  t.symlink("s2", sentinel_);
  t.symlink("s2", outdir_ + "/victim");
  t.end();
  unpack(t.data);
  EXPECT_EQ(read_file(p("f")), "pwned");
  EXPECT_TRUE(S_ISDIR(lstat_of(p("d")).st_mode));
  EXPECT_TRUE(S_ISFIFO(lstat_of(p("n")).st_mode));
  expect_host_untouched();
}

TEST_F(Unpack, MissingParentsTakeTheLowerLayersMetadata) {
  // containerd's rule: a parent the layer leaves out would hide the lower directory with a
  // 0755 root one in the overlay; it gets the lower one's owner and mode instead
  TarWriter l;
  l.dir("tmp/", 01777);
  l.dir("opt/", 0750, 1000, 1000);
  l.end();
  lower(l.data);
  TarWriter t;
  t.file("tmp/a/file", "x");
  t.file("opt/app", "y");
  t.end();
  unpack(t.data);
  struct stat st = lstat_of(p("tmp"));
  EXPECT_EQ(st.st_mode & 07777, 01777u);
  EXPECT_EQ(st.st_uid, 0u);
  st = lstat_of(p("opt"));
  EXPECT_EQ(st.st_mode & 07777, 0750u);
  EXPECT_EQ(st.st_uid, 1000u);
  EXPECT_EQ(st.st_gid, 1000u);
  EXPECT_EQ(lstat_of(p("tmp/a")).st_mode & 07777, 0755u);  // no lower: as before
}

TEST_F(Unpack, WhiteoutsThroughHostileSymlinksStayInside) {
  TarWriter l;
  l.dir(outdir_.substr(1) + "/");
  l.file(outdir_.substr(1) + "/victim", "lower");
  l.symlink("w", outdir_);  // the lower layer has the same link: the whiteout hides its victim
  l.end();
  lower(l.data);
  TarWriter t;
  t.symlink("w", outdir_);
  t.file("w/.wh.victim", "");
  t.symlink("o", "../../../../../" + outdir_);
  t.file("o/.wh..wh..opq", "");
  t.end();
  unpack(t.data);
  std::string inside = p(outdir_.substr(1));
  EXPECT_TRUE(S_ISCHR(lstat_of(inside + "/victim").st_mode));
  EXPECT_EQ(xattr_of(inside, "trusted.overlay.opaque"), "y");
  expect_host_untouched();
}

TEST_F(Unpack, SymlinkLoopsFail) {
  TarWriter t;
  t.symlink("loop", "loop");
  t.file("loop/x", "x");
  t.end();
  expect_throws(t.data, "Too many levels of symbolic links");
  TarWriter u;
  u.file("f", "f");
  u.symlink("l", "f");
  u.file("l/x", "x");
  u.end();
  remove_tree(root_);
  ASSERT_EQ(mkdir(root_.c_str(), 0755), 0);
  expect_throws(u.data, "open directory \"l\": Not a directory");
  expect_host_untouched();
}

TEST_F(Unpack, HardlinkToHostShadowFails) {
  struct stat shadow {};
  bool have_shadow = stat("/etc/shadow", &shadow) == 0;
  TarWriter t;
  t.hardlink("stolen", "/etc/shadow");
  t.end();
  expect_throws(t.data, "is not in the layer");
  EXPECT_FALSE(exists(p("stolen")));
  if (have_shadow) {
    struct stat now {};
    ASSERT_EQ(stat("/etc/shadow", &now), 0);
    EXPECT_EQ(now.st_nlink, shadow.st_nlink);
  }

  // Even with an etc/ in the layer, the link resolves inside it.
  TarWriter u;
  u.dir("etc/");
  u.hardlink("stolen", "/etc/shadow");
  u.end();
  expect_throws(u.data, "is not in the layer");
  expect_host_untouched();
}

TEST_F(Unpack, HardlinksOutsideTheRootFail) {
  TarWriter t;
  t.hardlink("h", "../../sentinel");
  t.end();
  expect_throws(t.data, "is not in the layer");

  TarWriter u;
  u.hardlink("h", sentinel_);
  u.end();
  expect_throws(u.data, "is not in the layer");

  // Through a symlinked directory: resolved in the root, so not found either.
  TarWriter v;
  v.symlink("up", "../../..");
  v.hardlink("h", "up" + sentinel_);
  v.end();
  expect_throws(v.data, "is not in the layer");

  // A hardlink to a symlink that points outside links the symlink itself.
  remove_tree(root_);
  ASSERT_EQ(mkdir(root_.c_str(), 0755), 0);
  TarWriter w;
  w.symlink("s", sentinel_);
  w.hardlink("h", "s");
  w.end();
  unpack(w.data);
  EXPECT_TRUE(S_ISLNK(lstat_of(p("h")).st_mode));
  EXPECT_EQ(lstat_of(p("h")).st_ino, lstat_of(p("s")).st_ino);
  expect_host_untouched();
}

TEST_F(Unpack, TruncatedTarFails) {
  TarWriter t;
  t.file("a", std::string(5000, 'a'));
  t.file("b", std::string(5000, 'b'));
  t.end();
  expect_throws(t.data.substr(0, 512 + 5120 + 512 + 1000), "truncated tar stream at entry \"b\"");
  expect_throws(t.data.substr(0, 512 + 5120 + 100), "truncated tar stream");
  expect_throws(t.data.substr(0, 512 + 5120), "truncated tar stream");  // no end marker
  expect_host_untouched();
}

TEST_F(Unpack, BadChecksumFails) {
  TarWriter t;
  t.file("a", "a");
  t.file("b", "b");
  t.end();
  std::string bad = t.data;
  bad[1024 + 1] ^= 1;  // the name of "b"
  expect_throws(bad, "invalid tar header checksum after entry \"a\"");
}

TEST_F(Unpack, CorruptCompressedStreamsFail) {
  std::string tar = sample_tar();
  std::string gz = gzip(tar);
  expect_throws(gz.substr(0, gz.size() / 2), "truncated gzip stream", Compression::gzip);
  expect_throws(gz.substr(0, gz.size() - 4), "truncated gzip stream", Compression::detect);
  std::string gz_bad = gz;
  gz_bad[gz_bad.size() - 6] ^= 0x55;  // CRC32
  expect_throws(gz_bad, "gzip", Compression::gzip);
  expect_throws(gz + "garbage!", "trailing garbage", Compression::gzip);

  std::string zs = zstd(tar);
  std::string zs_bad = zs;
  for (size_t i = 20; i < zs_bad.size() - 8; i += 7) zs_bad[i] = static_cast<char>(0xa5);
  expect_throws(zs_bad, "zstd", Compression::zstd);
  expect_throws(zs.substr(0, zs.size() - 10), "truncated zstd stream", Compression::detect);
  expect_throws(zs + "garbage!", "zstd", Compression::zstd);
  expect_throws("not a zstd stream at all", "zstd", Compression::zstd);

  std::string x = xz(tar);
  expect_throws(x.substr(0, x.size() - 10), "xz: truncated xz stream", Compression::detect);
  std::string x_bad = x;
  x_bad[x_bad.size() / 2] ^= 0x55;
  expect_throws(x_bad, "xz: ", Compression::xz);
  expect_throws(x + "garbage!", "xz: ", Compression::xz);
  expect_throws("not an xz stream at all", "xz: not an xz stream", Compression::xz);
  expect_host_untouched();
}

TEST_F(Unpack, RefusesSparseAndUnknownEntries) {
  TarWriter t;
  t.header({.name = "sparse", .type = 'S', .gnu = true});
  t.end();
  expect_throws(t.data, "sparse file at entry \"sparse\" is not supported");
  TarWriter u;
  u.header({.name = "weird", .type = 'Z'});
  u.end();
  expect_throws(u.data, "unsupported tar entry type 0x5a");
  TarWriter v;
  v.file("", "x");
  v.end();
  expect_throws(v.data, "empty path");
  TarWriter w;
  w.file(".", "x");
  w.end();
  expect_throws(w.data, "resolves to the layer root");
}

}  // namespace
