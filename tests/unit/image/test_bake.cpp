// bake without mmdebstrap: option checks, the cache key, the mmdebstrap command line, and the
// rootfs tarball -> gzip layer step (./dev/* dropped, digests right). The real bake runs in
// tests/integration/test_load_save_bake.py.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "base/error.hpp"
#include "base/fd.hpp"
#include "base/fs.hpp"
#include "image/archive.hpp"
#include "image/bake.hpp"
#include "image/decompress.hpp"
#include "image/digest.hpp"
#include "image/tar.hpp"
#include "test_support.hpp"

using namespace racker;
using namespace racker::image;

namespace {

std::string error_of(const BakeOptions& o) {
  try {
    normalize_bake_options(o);
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

BakeOptions debian() {
  BakeOptions o;
  o.distro = "debian";
  return o;
}

// The entries of a stored gzip layer blob, read back (its diff_id checked).
std::vector<TarEntry> layer_entries(const ContentStore& content, const LayerBlob& blob) {
  EXPECT_TRUE(content.has(blob.digest));
  UniqueFd fd(::open(content.blob_path(blob.digest).c_str(), O_RDONLY | O_CLOEXEC));
  LayerStream stream(fd.get(), Compression::gzip);
  TarReader reader(stream);
  std::vector<TarEntry> out;
  TarEntry e;
  while (reader.next(e)) out.push_back(e);
  reader.drain();
  EXPECT_EQ(stream.digest(), blob.diff_id);
  return out;
}

std::vector<std::string> paths_of(const std::vector<TarEntry>& entries) {
  std::vector<std::string> out;
  for (auto& e : entries) out.push_back(e.path);
  return out;
}

class BakeLayerTest : public ::testing::Test {
 protected:
  test::TempDir tmp_{"racker-bake"};
  const std::string dir_ = tmp_.path();
};

}  // namespace

TEST(BakeOptions, DefaultsAndNames) {
  BakeOptions o = normalize_bake_options(debian());
  EXPECT_EQ(o.suite, "bookworm");
  EXPECT_EQ(o.variant, "minbase");
  EXPECT_EQ(o.name,
            "docker.io/library/debian:bookworm");  // what `racker run debian:bookworm` finds

  BakeOptions u;
  u.distro = "ubuntu";
  EXPECT_EQ(normalize_bake_options(u).name, "docker.io/library/ubuntu:noble");

  BakeOptions t = debian();
  t.suite = "trixie";
  t.name = "localhost/os/deb";
  t.include = {"systemd", "dbus", "systemd-sysv", "dbus", ""};
  BakeOptions n = normalize_bake_options(t);
  EXPECT_EQ(n.name, "localhost/os/deb:latest");
  EXPECT_EQ(n.include, (std::vector<std::string>{"dbus", "systemd", "systemd-sysv"}));
}

TEST(BakeOptions, Refusals) {
  BakeOptions o = debian();
  o.distro = "fedora";
  EXPECT_EQ(error_of(o), "bake fedora: not supported yet (supported: debian, ubuntu)");
  o = debian();
  o.suite = "bookworm --foo";
  EXPECT_EQ(error_of(o), "bake debian: invalid suite \"bookworm --foo\"");
  o = debian();
  o.variant = "huge";
  EXPECT_EQ(error_of(o),
            "bake debian: unknown variant \"huge\" (mmdebstrap knows extract, custom, essential, "
            "apt, required, minbase, buildd, important, debootstrap, standard)");
  o = debian();
  o.include = {"--hook=x"};
  EXPECT_EQ(error_of(o), "bake debian: invalid package name \"--hook=x\"");
  o = debian();
  o.mirror = "deb.debian.org";
  EXPECT_EQ(error_of(o), "bake debian: invalid mirror \"deb.debian.org\" (want a URL)");
  o = debian();
  o.name = "x@sha256:" + std::string(64, 'a');
  EXPECT_EQ(error_of(o), "bake: cannot name an image by digest: " + o.name);
  o = debian();
  o.arch = "aarch64";  // qemu's name, not Debian's
  EXPECT_EQ(error_of(o),
            "bake debian: unknown architecture \"aarch64\" (Debian's names: amd64, i386, arm64, "
            "armhf, armel, ppc64el, riscv64, s390x, mips64el)");
}

TEST(BakeOptions, CacheKey) {
  BakeOptions a = debian(), b = debian();
  a.include = {"systemd", "dbus"};
  b.include = {"dbus", "systemd", "dbus"};
  std::string ka = bake_cache_key(normalize_bake_options(a), "amd64");
  EXPECT_EQ(ka.size(), 32u);
  EXPECT_EQ(ka, bake_cache_key(normalize_bake_options(b), "amd64"));
  EXPECT_NE(ka, bake_cache_key(normalize_bake_options(a), "arm64"));
  b.suite = "trixie";
  EXPECT_NE(ka, bake_cache_key(normalize_bake_options(b), "amd64"));
  BakeOptions c = a;
  c.mirror = "http://mirror.example/debian";
  EXPECT_NE(ka, bake_cache_key(normalize_bake_options(c), "amd64"));
  BakeOptions d = a;
  d.name = "other:1";  // the name is not part of the rootfs
  EXPECT_EQ(ka, bake_cache_key(normalize_bake_options(d), "amd64"));
}

TEST(BakeOptions, MmdebstrapCommandLine) {
  BakeOptions o = debian();
  o.include = {"systemd", "dbus"};
  o.mirror = "http://mirror.example/debian";
  o.quiet = true;
  EXPECT_EQ(mmdebstrap_argv(normalize_bake_options(o), "/c/k.tar.partial"),
            (std::vector<std::string>{"mmdebstrap", "--variant=minbase", "--format=tar", "--quiet",
                                      "--include=dbus,systemd", "bookworm", "/c/k.tar.partial",
                                      "http://mirror.example/debian"}));
  BakeOptions u;
  u.distro = "ubuntu";
  EXPECT_EQ(mmdebstrap_argv(normalize_bake_options(u), "out"),
            (std::vector<std::string>{"mmdebstrap", "--variant=minbase", "--format=tar",
                                      "--components=main,universe",
                                      std::string("--keyring=") + kUbuntuKeyring, "noble", "out"}));
  // this machine's architecture is left to mmdebstrap; a foreign one is asked for
  BakeOptions n = debian();
  n.arch = debian_arch_of(host_platform());
  EXPECT_EQ(mmdebstrap_argv(normalize_bake_options(n), "out").size(), 5u);
  BakeOptions f = debian();
  f.arch = n.arch == "arm64" ? "s390x" : "arm64";
  EXPECT_EQ(mmdebstrap_argv(normalize_bake_options(f), "out")[3], "--architectures=" + f.arch);
}

TEST(BakeOptions, DebianArchitecturesAsPlatforms) {
  EXPECT_EQ(platform_of_debian_arch("arm64").str(), "linux/arm64/v8");
  EXPECT_EQ(platform_of_debian_arch("armhf").str(), "linux/arm/v7");
  EXPECT_EQ(platform_of_debian_arch("ppc64el").str(), "linux/ppc64le");
  EXPECT_EQ(platform_of_debian_arch("riscv64").str(), "linux/riscv64");
  EXPECT_EQ(platform_of_debian_arch("s390x").str(), "linux/s390x");
  EXPECT_EQ(platform_of_debian_arch("i386").str(), "linux/386");
  for (auto& a : debian_archs())
    EXPECT_EQ(debian_arch_of(platform_of_debian_arch(a.debian)), a.debian) << a.debian;
  EXPECT_EQ(debian_arch_of(parse_platform("linux/arm")), "armhf");  // arm without variant: v7
  EXPECT_EQ(debian_arch_of(parse_platform("linux/sparc64")), "");
}

TEST_F(BakeLayerTest, RootfsTarBecomesGzipLayerWithoutDev) {
  std::string tar_path = dir_ + "/rootfs.tar";
  std::string long_dev = "./dev/" + std::string(150, 'x');  // PAX path header
  std::string long_etc = "./etc/" + std::string(150, 'y');  // kept, with its PAX header
  {
    UniqueFd fd(::open(tar_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
    ASSERT_TRUE(fd.valid());
    TarWriter w(fd.get());
    w.add_dir("./");
    w.add_dir("./dev");
    w.add_file("./dev/null", std::string("not a device"));
    w.add_symlink("./dev/fd", "/proc/self/fd");
    w.add_dir("./dev/pts");
    w.add_file(long_dev, std::string(700, 'd'));
    w.add_dir("./etc");
    w.add_file("./etc/os-release", std::string("PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n"));
    w.add_file(long_etc, std::string(1000, 'e'));
    w.add_dir("./devices");  // not below ./dev
    w.finish();
  }
  ContentStore content(dir_ + "/store");
  UniqueFd in(::open(tar_path.c_str(), O_RDONLY | O_CLOEXEC));
  LayerBlob blob = rootfs_tar_to_layer(in.get(), content, dir_ + "/store/ingest");
  ASSERT_TRUE(content.has(blob.digest));
  EXPECT_EQ(blob.size, static_cast<uint64_t>(read_file(content.blob_path(blob.digest)).size()));

  EXPECT_EQ(paths_of(layer_entries(content, blob)),
            (std::vector<std::string>{"./", "./dev/", "./etc/", "./etc/os-release", long_etc,
                                      "./devices/"}));

  // the same tarball again: the same blob (deterministic gzip), already stored
  UniqueFd again(::open(tar_path.c_str(), O_RDONLY | O_CLOEXEC));
  LayerBlob blob2 = rootfs_tar_to_layer(again.get(), content, dir_ + "/store/ingest");
  EXPECT_EQ(blob2.digest, blob.digest);
  EXPECT_EQ(blob2.diff_id, blob.diff_id);
}

TEST_F(BakeLayerTest, GnuLongNamesBelowDevGoWithTheirEntries) {
  // mmdebstrap's tarballs come from GNU tar: names and link targets past 100 bytes are GNU
  // long-name ('L') and long-link ('K') headers, which go with the entry they name
  if (std::system("tar --version >/dev/null 2>&1") != 0) GTEST_SKIP() << "no tar";
  std::string src = dir_ + "/rootfs", tar_path = dir_ + "/rootfs.tar";
  std::string x(150, 'x'), y(150, 'y'), t(150, 't');
  mkdir_p(src + "/dev/" + x);
  write_file_atomic(src + "/dev/" + x + "/" + y, "dev");
  ASSERT_EQ(::symlink(t.c_str(), (src + "/dev/fd").c_str()), 0);
  mkdir_p(src + "/etc");
  write_file_atomic(src + "/etc/" + y, "etc");
  ASSERT_EQ(::symlink(t.c_str(), (src + "/etc/link").c_str()), 0);
  ASSERT_EQ(
      std::system(("tar --format=gnu --sort=name -C " + src + " -cf " + tar_path + " .").c_str()),
      0);
  ASSERT_NE(read_file(tar_path).find("././@LongLink"), std::string::npos);

  ContentStore content(dir_ + "/store");
  UniqueFd in(::open(tar_path.c_str(), O_RDONLY | O_CLOEXEC));
  LayerBlob blob = rootfs_tar_to_layer(in.get(), content, dir_ + "/store/ingest");
  std::vector<std::string> entries;  // path -> link target
  for (auto& e : layer_entries(content, blob)) entries.push_back(e.path + " -> " + e.linkpath);
  EXPECT_EQ(entries, (std::vector<std::string>{"./ -> ", "./dev/ -> ", "./etc/ -> ",
                                               "./etc/link -> " + t, "./etc/" + y + " -> "}));
}

TEST_F(BakeLayerTest, TreeToLayerLeavesOutDev) {
  // a provisioned upper directory becomes a layer the same way, ./dev/* left out
  if (::geteuid() != 0) GTEST_SKIP() << "needs root (device nodes)";
  std::string src = dir_ + "/src";
  mkdir_p(src + "/dev/pts");
  mkdir_p(src + "/devices");
  ASSERT_EQ(::mknod((src + "/dev/null").c_str(), S_IFCHR | 0666, makedev(1, 3)), 0);
  write_file_atomic(src + "/dev/" + std::string(150, 'x'), "long");
  write_file_atomic(src + "/etc", "kept");
  ContentStore content(dir_ + "/store");
  LayerBlob blob = tree_to_layer(src, content, dir_ + "/store/ingest");
  EXPECT_EQ(paths_of(layer_entries(content, blob)),
            (std::vector<std::string>{"./", "./dev/", "./devices/", "./etc"}));
}

TEST_F(BakeLayerTest, UbuntuWithoutKeyringFailsClearly) {
  if (path_exists(kUbuntuKeyring)) GTEST_SKIP() << kUbuntuKeyring << " is installed";
  ContentStore content(dir_ + "/store");
  ImageStore images(dir_ + "/store");
  BakeOptions u;
  u.distro = "ubuntu";
  u.mmdebstrap = "/nonexistent/mmdebstrap";
  EXPECT_EQ(test::error_of([&] { bake_image(content, images, u); }),
            "bake ubuntu noble: the Ubuntu archive keyring " + std::string(kUbuntuKeyring) +
                " is missing: install ubuntu-keyring (Debian bookworm's archive does not have "
                "it, so Ubuntu images cannot be baked on such a host yet)");
  BakeOptions d = debian();
  d.mmdebstrap = "/nonexistent/mmdebstrap";
  d.cache_dir = dir_ + "/cache";
  EXPECT_EQ(test::error_of([&] { bake_image(content, images, d); }),
            "bake debian bookworm: /nonexistent/mmdebstrap not found (apt-get install "
            "mmdebstrap)");
}
