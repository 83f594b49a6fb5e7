#include <gtest/gtest.h>

#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>

#include "base/error.hpp"
#include "probe/acquire.hpp"
#include "probe/catalog.hpp"
#include "test_support.hpp"

using racker::Error;
using racker::probe::Catalog;

namespace {

std::string err_of(const std::string& json) {
  return racker::test::error_of([&] { Catalog::parse(json, "cat.json"); });
}

std::string one(const std::string& entry) {
  return "{\"images\": [" + entry + "]}";
}

}  // namespace

TEST(Catalog, BuiltinHasTheCuratedLabels) {
  auto c = Catalog::parse(Catalog::builtin_text(), "built-in");
  for (auto* l : {"debian-bookworm", "debian-trixie", "ubuntu-noble", "fedora-41", "rockylinux-9",
                  "opensuse-tumbleweed", "archlinux"})
    EXPECT_NE(c.find(l), nullptr) << l;
  auto& b = c.at("debian-bookworm");
  EXPECT_TRUE(b.baked());
  EXPECT_EQ(b.bake_distro, "debian");
  EXPECT_EQ(b.bake_suite, "bookworm");
  EXPECT_EQ(b.package_manager, "apt");
  auto& f = c.at("fedora-41");
  EXPECT_FALSE(f.baked());
  EXPECT_EQ(f.family, "fedora");
  EXPECT_EQ(f.package_manager, "dnf");
  EXPECT_EQ(c.at("opensuse-tumbleweed").package_manager, "zypper");
  EXPECT_EQ(c.at("archlinux").package_manager, "pacman");
}

TEST(Catalog, ParsesBothSources) {
  auto c = Catalog::parse(
      "{\"images\": [{\"label\": \"a\", \"source\": {\"image\": \"docker.io/x/y:1\"},"
      " \"family\": \"arch\", \"package_manager\": \"pacman\"},"
      "{\"label\": \"b\", \"source\": {\"bake\": {\"distro\": \"ubuntu\"}},"
      " \"family\": \"ubuntu\", \"package_manager\": \"apt\"}]}",
      "x");
  ASSERT_EQ(c.entries().size(), 2u);
  EXPECT_EQ(c.at("a").image_ref, "docker.io/x/y:1");
  EXPECT_EQ(c.at("a").source_text(), "docker.io/x/y:1");
  EXPECT_EQ(c.at("b").source_text(), "bake ubuntu");
}

TEST(Catalog, TarballSourcesAndTheirChecksums) {
  auto c = Catalog::parse(
      "{\"images\": [{\"label\": \"t\", \"source\": {\"tarball\": {\"url\": "
      "\"https://h/rel/x-{arch}-root.tar.xz\"}}, \"family\": \"ubuntu\", \"package_manager\": "
      "\"apt\"}, {\"label\": \"u\", \"source\": {\"tarball\": {\"url\": \"http://h/a.tar\", "
      "\"sha256sums\": \"http://h/sums/SUMS\"}}, \"family\": \"ubuntu\", \"package_manager\": "
      "\"apt\"}]}",
      "x");
  auto& t = c.at("t");
  EXPECT_TRUE(t.from_tarball());
  EXPECT_FALSE(t.baked());
  EXPECT_EQ(t.tarball_sums, "https://h/rel/SHA256SUMS");  // next to the tarball by default
  EXPECT_EQ(t.source_text(), "https://h/rel/x-{arch}-root.tar.xz");
  EXPECT_EQ(racker::probe::with_arch(t.tarball_url, "arm64"), "https://h/rel/x-arm64-root.tar.xz");
  EXPECT_EQ(c.at("u").tarball_sums, "http://h/sums/SUMS");
  // the original's Ubuntu labels come from the cloud images' minimal root tarballs
  auto b = Catalog::parse(Catalog::builtin_text(), "built-in");
  for (auto* l : {"ubuntu-focal", "ubuntu-jammy", "ubuntu-noble"}) {
    EXPECT_TRUE(b.at(l).from_tarball()) << l;
    EXPECT_TRUE(b.at(l).tarball_url.starts_with("https://cloud-images.ubuntu.com/minimal/"));
  }

  const std::string h1(64, 'a'), h2(64, 'B');
  std::string sums = h1 + " *ubuntu-24.04-root.tar.xz\n" + h2 + "  other.tar\n" + "junk line\n";
  EXPECT_EQ(racker::probe::sha256sums_entry(sums, "ubuntu-24.04-root.tar.xz"), h1);
  EXPECT_EQ(racker::probe::sha256sums_entry(sums, "other.tar"), std::string(64, 'b'));
  EXPECT_EQ(racker::probe::sha256sums_entry(sums, "missing.tar"), "");
  EXPECT_EQ(racker::probe::sha256sums_entry(sums, "root.tar.xz"), "");  // whole names only
}

TEST(Catalog, ValidationErrorsNameTheEntryAndField) {
  const std::string src = "\"source\": {\"bake\": {\"distro\": \"debian\"}}";
  const std::string tail = ", \"family\": \"debian\", \"package_manager\": \"apt\"}";
  EXPECT_EQ(err_of("{nope"), err_of("{nope"));
  EXPECT_NE(err_of("{nope").find("cat.json: invalid JSON"), std::string::npos);
  EXPECT_EQ(err_of("[]"), "cat.json: expected an object with an \"images\" array");
  EXPECT_EQ(err_of("{\"images\": []}"), "cat.json: no images");
  EXPECT_EQ(err_of(one("{" + src + tail)), "cat.json: images[0]: missing \"label\"");
  EXPECT_EQ(err_of(one("{\"label\": \"Bad Label\", " + src + tail)),
            "cat.json: images[0]: invalid label \"Bad Label\" (use a-z, 0-9, '-', '.', '_')");
  EXPECT_EQ(err_of(one("{\"label\": \"x\"" + tail)), "cat.json: images[0] (x): missing \"source\"");
  EXPECT_EQ(err_of(one("{\"label\": \"x\", \"source\": {\"git\": \"u\"}" + tail)),
            "cat.json: images[0] (x): unknown source \"git\" (bake, image or tarball)");
  EXPECT_EQ(
      err_of(one("{\"label\": \"x\", \"source\": {\"image\": \"a\", \"bake\": {}}" + tail)),
      "cat.json: images[0] (x): \"source\" must be {\"bake\": {...}}, {\"image\": \"REF\"} or "
      "{\"tarball\": {...}}");
  EXPECT_EQ(err_of(one("{\"label\": \"x\", \"source\": {\"tarball\": {\"url\": "
                       "\"ftp://h/r.tar.xz\"}}" +
                       tail)),
            "cat.json: images[0] (x): source.tarball: \"ftp://h/r.tar.xz\" is not an http(s) URL");
  EXPECT_EQ(err_of(one("{\"label\": \"x\", \"source\": {\"tarball\": {}}" + tail)),
            "cat.json: images[0] (x): source.tarball: missing \"url\"");
  EXPECT_EQ(
      err_of(one("{\"label\": \"x\", \"source\": {\"bake\": {\"distro\": \"fedora\"}}" + tail)),
      "cat.json: images[0] (x): source.bake: distro \"fedora\" cannot be baked (debian or "
      "ubuntu)");
  EXPECT_EQ(err_of(one("{\"label\": \"x\", " + src +
                       ", \"family\": \"gentoo\", \"package_manager\": \"apt\"}")),
            "cat.json: images[0] (x): unknown family \"gentoo\" (debian, ubuntu, fedora, rhel, "
            "suse, arch)");
  EXPECT_EQ(err_of(one("{\"label\": \"x\", " + src +
                       ", \"family\": \"debian\", \"package_manager\": \"emerge\"}")),
            "cat.json: images[0] (x): unknown package_manager \"emerge\" (apt, dnf, microdnf, yum, "
            "zypper, pacman)");
  EXPECT_EQ(err_of(one("{\"label\": \"x\", " + src + ", \"family\": 3" +
                       ", \"package_manager\": \"apt\"}")),
            "cat.json: images[0] (x): \"family\" must be a non-empty string");
  std::string e = "{\"label\": \"x\", " + src + tail;
  EXPECT_EQ(err_of("{\"images\": [" + e + ", " + e + "]}"), "cat.json: duplicate label \"x\"");
}

TEST(Catalog, UnknownLabelListsTheKnownOnes) {
  auto c = Catalog::parse(one("{\"label\": \"only\", \"source\": {\"image\": \"a\"}, "
                              "\"family\": \"arch\", \"package_manager\": \"pacman\"}"),
                          "x");
  try {
    c.at("nope");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "unknown image label \"nope\" (known: only)");
    EXPECT_EQ(e.err(), ENOENT);
  }
}

TEST(Catalog, LoadPrefersPathThenEnvironment) {
  char dir[] = "/tmp/probe-catalog-XXXXXX";
  ASSERT_NE(::mkdtemp(dir), nullptr);
  std::string path = std::string(dir) + "/c.json";
  FILE* f = std::fopen(path.c_str(), "w");
  std::fputs(one("{\"label\": \"mine\", \"source\": {\"image\": \"a\"}, "
                 "\"family\": \"arch\", \"package_manager\": \"pacman\"}")
                 .c_str(),
             f);
  std::fclose(f);
  EXPECT_NE(Catalog::load(path).find("mine"), nullptr);
  ::setenv("POSTROJ_CATALOG", path.c_str(), 1);
  EXPECT_NE(Catalog::load().find("mine"), nullptr);
  ::unsetenv("POSTROJ_CATALOG");
  EXPECT_NE(Catalog::load().find("debian-bookworm"), nullptr);
  EXPECT_EQ(Catalog::load().origin(), "built-in catalog");
  std::remove(path.c_str());
  ::rmdir(dir);
}

TEST(Catalog, ImageNames) {
  EXPECT_EQ(racker::probe::image_name_for("debian-bookworm"),
            "postroj.local/debian-bookworm:latest");
  EXPECT_EQ(racker::probe::base_image_name_for("archlinux"), "postroj.local/base/archlinux:latest");
  EXPECT_EQ(racker::probe::image_name_for("debian-bookworm", "arm64"),
            "postroj.local/debian-bookworm:arm64");
}
