// The tar module (image/tar.hpp): what TarWriter writes, TarReader reads back (every entry type,
// long paths and link targets, ids past the octal fields, setuid/sticky modes, the capability
// xattr); write_tree of a directory unpacked again by unpack_layer gives the same tree (root
// needed for devices and owners). A directory as a layer (tree_to_layer): test_bake.cpp.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "base/error.hpp"
#include "base/fd.hpp"
#include "base/fs.hpp"
#include "image/decompress.hpp"
#include "image/tar.hpp"
#include "image/unpack.hpp"
#include "test_support.hpp"

using namespace racker;
using namespace racker::image;

namespace {

// A vfs_cap_data, revision 2: cap_net_bind_service permitted and effective. Binary, with NULs.
const std::string kCap(
    "\x01\x00\x00\x02\x00\x04\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00", 20);

std::string temp_dir() {
  char tmpl[] = "/tmp/racker-tar-XXXXXX";
  if (!mkdtemp(tmpl)) throw_errno("mkdtemp");
  return tmpl;
}

class TarTest : public ::testing::Test {
 protected:
  ~TarTest() override { remove_tree(dir_); }

  // Every entry of the tar (and the data of its files), read with TarReader.
  std::vector<std::pair<TarEntry, std::string>> read_back(const std::string& tar) {
    write_file_atomic(dir_ + "/read.tar", tar);
    UniqueFd fd(::open((dir_ + "/read.tar").c_str(), O_RDONLY | O_CLOEXEC));
    LayerStream stream(fd.get(), Compression::none);
    TarReader reader(stream);
    std::vector<std::pair<TarEntry, std::string>> out;
    TarEntry e;
    while (reader.next(e)) {
      std::string data;
      for (auto s = reader.read_data(); !s.empty(); s = reader.read_data())
        data.append(reinterpret_cast<const char*>(s.data()), s.size());
      out.emplace_back(e, data);
    }
    reader.drain();
    return out;
  }

  std::string dir_ = temp_dir();
};

std::string tar_of(const std::function<void(TarWriter&)>& fill) {
  std::string out;
  TarWriter w([&](const void* p, size_t n) { out.append(static_cast<const char*>(p), n); });
  fill(w);
  w.finish();
  return out;
}

TarEntry entry(TarEntry::Type type, const std::string& path, uint32_t mode) {
  TarEntry e;
  e.type = type;
  e.path = path;
  e.mode = mode;
  e.uid = 1000;
  e.gid = 100;
  e.mtime = {1700000000, 0};
  return e;
}

std::string content(size_t n) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>('a' + i * 7 % 26);
  return s;
}

}  // namespace

TEST_F(TarTest, WriterReaderRoundTripOfEveryEntryType) {
  std::string p255 = "./" + std::string(100, 'a') + "/" + std::string(100, 'b') + "/" +
                     std::string(70, 'c');                                      // > 255: a PAX path
  std::string p150 = "./" + std::string(90, 'p') + "/" + std::string(50, 'f');  // ustar prefix
  std::string target(200, 't');
  std::vector<std::pair<TarEntry, std::string>> want;
  auto add = [&](TarEntry e, std::string data = "") {
    e.size = e.type == TarEntry::Type::file ? data.size() : 0;
    e.atime = e.mtime;
    want.emplace_back(e, data);
  };
  add(entry(TarEntry::Type::dir, "./", 0755));
  add(entry(TarEntry::Type::dir, "./" + std::string(120, 'd') + "/", 01777));  // sticky
  add(entry(TarEntry::Type::dir, "./" + std::string(100, 'a') + "/", 02775));  // setgid
  TarEntry big = entry(TarEntry::Type::file, p255, 04755);                     // setuid
  big.uid = 3000000000u;  // past the octal field: PAX uid (and base-256)
  big.gid = 3000000001u;
  big.xattrs = {{"security.capability", kCap}};
  add(big, content(1000));
  add(entry(TarEntry::Type::file, p150, 0644), content(512));
  TarEntry old = entry(TarEntry::Type::file, "./old", 0600);
  old.mtime = {-5, 0};  // before 1970: PAX mtime
  add(old, "");
  TarEntry sym = entry(TarEntry::Type::symlink, "./link", 0777);
  sym.linkpath = target;  // > 100: PAX linkpath
  add(sym);
  TarEntry hard = entry(TarEntry::Type::hardlink, "./hard", 04755);
  hard.linkpath = p255;
  add(hard);
  add(entry(TarEntry::Type::fifo, "./fifo", 0640));
  TarEntry chr = entry(TarEntry::Type::chardev, "./null", 0666);
  chr.devmajor = 1;
  chr.devminor = 3;
  add(chr);
  TarEntry blk = entry(TarEntry::Type::blockdev, "./blk", 0660);
  blk.devmajor = 4095;
  blk.devminor = 1048575;
  add(blk);

  std::string tar = tar_of([&](TarWriter& w) {
    for (auto& [e, data] : want)
      w.add(e, [&](const TarWriter::Sink& sink) { sink(data.data(), data.size()); });
  });
  EXPECT_NE(tar.find(" uid=3000000000\n"), std::string::npos);
  EXPECT_NE(tar.find(" gid=3000000001\n"), std::string::npos);
  EXPECT_NE(tar.find(" SCHILY.xattr.security.capability=" + kCap + "\n"), std::string::npos);

  auto got = read_back(tar);
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    const TarEntry &w = want[i].first, &g = got[i].first;
    SCOPED_TRACE(w.path);
    EXPECT_EQ(g.type, w.type);
    EXPECT_EQ(g.path, w.path);
    EXPECT_EQ(g.linkpath, w.linkpath);
    EXPECT_EQ(g.size, w.size);
    EXPECT_EQ(g.mode, w.mode);
    EXPECT_EQ(g.uid, w.uid);
    EXPECT_EQ(g.gid, w.gid);
    EXPECT_EQ(g.mtime.tv_sec, w.mtime.tv_sec);
    EXPECT_EQ(g.devmajor, w.devmajor);
    EXPECT_EQ(g.devminor, w.devminor);
    EXPECT_EQ(g.xattrs, w.xattrs);
    EXPECT_EQ(got[i].second, want[i].second);
  }
}

TEST_F(TarTest, WriterChecksTheDataItIsGiven) {
  TarWriter w([](const void*, size_t) {});
  EXPECT_EQ(
      test::error_of([&] { w.add_file("./f", 10, [](const TarWriter::Sink& s) { s("abc", 3); }); }),
      "./f: 3 bytes instead of 10");
}

namespace {

struct Node {
  struct stat st;
  std::string data;  // file content or symlink target
  std::string cap;   // security.capability
};

// Every entry below root (relative paths, "" the root), by lstat.
std::map<std::string, Node> tree_of(const std::string& root) {
  namespace fs = std::filesystem;
  std::map<std::string, Node> out;
  std::vector<std::string> paths = {""};
  for (auto& de : fs::recursive_directory_iterator(root))
    paths.push_back(fs::relative(de.path(), root).string());
  for (auto& rel : paths) {
    std::string p = rel.empty() ? root : root + "/" + rel;
    Node n{};
    EXPECT_EQ(::lstat(p.c_str(), &n.st), 0) << p;
    if (S_ISREG(n.st.st_mode)) n.data = read_file(p);
    if (S_ISLNK(n.st.st_mode)) n.data = fs::read_symlink(p).string();
    char v[64];
    ssize_t k = ::lgetxattr(p.c_str(), "security.capability", v, sizeof v);
    if (k > 0) n.cap.assign(v, static_cast<size_t>(k));
    out[rel] = n;
  }
  return out;
}

void make_tree(const std::string& src) {
  std::string deep = src + "/" + std::string(100, 'a') + "/" + std::string(100, 'b');
  mkdir_p(deep, 0750);
  write_file_atomic(deep + "/" + std::string(80, 'c'), content(3000));  // path > 255
  mkdir_p(src + "/bin");
  std::string ping = src + "/bin/ping";
  write_file_atomic(ping, content(100));
  ASSERT_EQ(::chown(ping.c_str(), 3000000000u, 3000000001u), 0);
  ASSERT_EQ(::chmod(ping.c_str(), 04755), 0);
  ASSERT_EQ(::setxattr(ping.c_str(), "security.capability", kCap.data(), kCap.size(), 0), 0);
  mkdir_p(src + "/tmp");
  ASSERT_EQ(::chmod((src + "/tmp").c_str(), 01777), 0);
  mkdir_p(src + "/sub");
  write_file_atomic(src + "/hl1", "linked");
  ASSERT_EQ(::link((src + "/hl1").c_str(), (src + "/sub/hl2").c_str()), 0);
  ASSERT_EQ(::mkfifo((src + "/fifo").c_str(), 0640), 0);
  ASSERT_EQ(::chown((src + "/fifo").c_str(), 7, 8), 0);
  ASSERT_EQ(::mknod((src + "/null").c_str(), S_IFCHR | 0666, makedev(1, 3)), 0);
  ASSERT_EQ(::mknod((src + "/blk").c_str(), S_IFBLK | 0600, makedev(7, 0)), 0);
  ASSERT_EQ(::symlink("../outside/target", (src + "/dangling").c_str()), 0);
  ASSERT_EQ(::symlink("/", (src + "/root").c_str()), 0);  // never followed
  ASSERT_EQ(::lchown((src + "/root").c_str(), 5, 6), 0);
  mkdir_p(src + "/empty", 0700);
  ASSERT_EQ(::chown((src + "/empty").c_str(), 1000, 1000), 0);
  {
    UniqueFd f(::open((src + "/sparse").c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644));
    ASSERT_TRUE(f.valid());
    ASSERT_EQ(::pwrite(f.get(), "end", 3, 1 << 20), 3);  // a 1 MiB hole first
  }
  {
    UniqueFd s(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::string sp = src + "/sock";  // left out, as tar does
    std::strncpy(a.sun_path, sp.c_str(), sizeof a.sun_path - 1);
    ASSERT_EQ(::bind(s.get(), reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  }
  // fixed times, directories last (their contents changed them)
  std::vector<std::string> all;
  for (auto& [rel, n] : tree_of(src)) all.push_back(rel);
  std::sort(all.begin(), all.end(), [](auto& a, auto& b) { return a.size() > b.size(); });
  for (size_t i = 0; i < all.size(); ++i) {
    timespec ts[2] = {{1600000000, 0}, {1600000000 + static_cast<time_t>(i), 0}};
    ASSERT_EQ(::utimensat(AT_FDCWD, (src + "/" + all[i]).c_str(), ts, AT_SYMLINK_NOFOLLOW), 0);
  }
}

}  // namespace

TEST_F(TarTest, WriteTreeThenUnpackGivesTheSameTree) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root (devices, owners, capabilities)";
  std::string src = dir_ + "/src", dst = dir_ + "/dst";
  mkdir_p(src);
  ASSERT_EQ(::chmod(src.c_str(), 0751), 0);
  make_tree(src);
  std::string tar = tar_of([&](TarWriter& w) { write_tree(w, src); });
  EXPECT_EQ(tar, tar_of([&](TarWriter& w) { write_tree(w, src); }));  // reproducible

  // "./" first, then depth first in byte order; a second link is a hardlink entry
  std::vector<std::string> paths;
  for (auto& [e, data] : read_back(tar)) {
    paths.push_back(e.path);
    if (e.path == "./sub/hl2") {
      EXPECT_EQ(e.linkpath, "./hl1");
    }
  }
  std::string a = "./" + std::string(100, 'a') + "/", b = a + std::string(100, 'b') + "/";
  EXPECT_EQ(paths, (std::vector<std::string>{"./", a, b, b + std::string(80, 'c'), "./bin/",
                                             "./bin/ping", "./blk", "./dangling", "./empty/",
                                             "./fifo", "./hl1", "./null", "./root", "./sparse",
                                             "./sub/", "./sub/hl2", "./tmp/"}));

  mkdir_p(dst);
  write_file_atomic(dir_ + "/layer.tar", tar);
  UniqueFd fd(::open((dir_ + "/layer.tar").c_str(), O_RDONLY | O_CLOEXEC));
  unpack_layer(fd.get(), Compression::none, dst);

  auto want = tree_of(src), got = tree_of(dst);
  want.erase("sock");
  ASSERT_EQ(got.size(), want.size());
  for (auto& [rel, w] : want) {
    SCOPED_TRACE(rel);
    ASSERT_TRUE(got.count(rel));
    const Node& g = got[rel];
    EXPECT_EQ(g.st.st_mode, w.st.st_mode);
    EXPECT_EQ(g.st.st_uid, w.st.st_uid);
    EXPECT_EQ(g.st.st_gid, w.st.st_gid);
    EXPECT_EQ(g.st.st_mtim.tv_sec, w.st.st_mtim.tv_sec);
    EXPECT_EQ(g.st.st_nlink, w.st.st_nlink);
    EXPECT_EQ(S_ISDIR(w.st.st_mode) ? 0 : g.st.st_size, S_ISDIR(w.st.st_mode) ? 0 : w.st.st_size);
    EXPECT_EQ(g.st.st_rdev, w.st.st_rdev);
    EXPECT_EQ(g.data, w.data);
    EXPECT_EQ(g.cap, w.cap);
  }
  EXPECT_EQ(got["bin/ping"].cap, want["bin/ping"].cap);
  EXPECT_FALSE(want["bin/ping"].cap.empty());
  EXPECT_EQ(got["hl1"].st.st_ino, got["sub/hl2"].st.st_ino);
}

TEST_F(TarTest, WriteTreeErrorNamesThePath) {
  EXPECT_EQ(test::error_of([&] { tar_of([&](TarWriter& w) { write_tree(w, dir_ + "/absent"); }); }),
            "open " + dir_ + "/absent: No such file or directory");
}
