#include <gtest/gtest.h>
#include <sys/mount.h>
#include <unistd.h>

#include "base/error.hpp"
#include "base/fs.hpp"
#include "runtime/container.hpp"
#include "runtime/mounts.hpp"

using namespace racker;
using namespace racker::runtime;

namespace {
std::string mount_error(const oci::Mount& m) {
  try {
    parse_mount_options(m, "mounts[2]");
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}
oci::Mount mount_of(std::string dst, std::string type, std::string src,
                    std::vector<std::string> opts) {
  oci::Mount m;
  m.destination = std::move(dst);
  m.type = std::move(type);
  m.source = std::move(src);
  m.options = std::move(opts);
  return m;
}
}  // namespace

TEST(MountOptions, FlagsDataAndPropagation) {
  oci::Mount m =
      mount_of("/dev", "tmpfs", "tmpfs", {"nosuid", "strictatime", "mode=755", "size=65536k"});
  auto o = parse_mount_options(m, "mounts[0]");
  EXPECT_EQ(o.flags, static_cast<unsigned long>(MS_NOSUID | MS_STRICTATIME));
  EXPECT_EQ(o.data, "mode=755,size=65536k");
  oci::Mount b = mount_of("/x", "none", "/src", {"rbind", "ro", "rslave"});
  o = parse_mount_options(b, "mounts[1]");
  EXPECT_TRUE(o.bind);
  EXPECT_TRUE(o.recursive_bind);
  EXPECT_EQ(o.flags, static_cast<unsigned long>(MS_RDONLY));
  EXPECT_EQ(o.propagation, static_cast<unsigned long>(MS_SLAVE | MS_REC));
  oci::Mount rw = mount_of("/x", "bind", "/src", {"ro", "rw"});
  o = parse_mount_options(rw, "mounts[1]");
  EXPECT_EQ(o.flags, 0ul);
  EXPECT_TRUE(o.bind);
  oci::Mount pts = mount_of("/dev/pts", "devpts", "devpts", {"newinstance", "ptmxmode=0666"});
  EXPECT_EQ(parse_mount_options(pts, "m").data, "newinstance,ptmxmode=0666");
}

TEST(MountOptions, UnknownOptionIsAnError) {
  oci::Mount m = mount_of("/dev", "tmpfs", "tmpfs", {"nosuid", "bogus"});
  EXPECT_EQ(mount_error(m), "config.json: mounts[2].options[1]: unknown mount option \"bogus\"");
  oci::Mount p = mount_of("/proc", "proc", "proc", {"newinstance"});
  EXPECT_EQ(mount_error(p),
            "config.json: mounts[2].options[0]: unknown mount option \"newinstance\"");
  oci::Mount i = mount_of("/x", "tmpfs", "tmpfs", {"idmap"});
  EXPECT_EQ(mount_error(i), "config.json: mounts[2]: id-mapped mounts must be bind mounts");
  oci::Mount u = mount_of("/x", "bind", "/y", {"rbind"});
  u.uid_mappings = u.gid_mappings = {{0, 100000, 65536}};
  EXPECT_EQ(mount_error(u),
            "config.json: mounts[2].uidMappings: needs the option \"idmap\" or \"ridmap\"");
  u.options = {"rbind", "idmap"};
  EXPECT_EQ(mount_error(u), "(no error)");
}

TEST(SecureJoin, SymlinksStayInsideTheRoot) {
  char tmpl[] = "/tmp/racker-sj-XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  std::string root = tmpl;
  mkdir_p(root + "/a/b");
  ASSERT_EQ(symlink("/etc", (root + "/abs").c_str()), 0);
  ASSERT_EQ(symlink("../../../..", (root + "/a/up").c_str()), 0);
  ASSERT_EQ(symlink("b", (root + "/a/rel").c_str()), 0);
  ASSERT_EQ(symlink("loop", (root + "/loop").c_str()), 0);
  EXPECT_EQ(secure_join(root, "/abs/passwd"), root + "/etc/passwd");
  EXPECT_EQ(secure_join(root, "/a/up/etc"), root + "/etc");
  EXPECT_EQ(secure_join(root, "/a/rel/c"), root + "/a/b/c");
  EXPECT_EQ(secure_join(root, "/../../x"), root + "/x");
  EXPECT_EQ(secure_join(root, "/loop/x").rfind(root + "/", 0), 0u);
  remove_tree(root);
}

TEST(Signals, NamesAndNumbers) {
  EXPECT_EQ(parse_signal("KILL"), 9);
  EXPECT_EQ(parse_signal("SIGTERM"), 15);
  EXPECT_EQ(parse_signal("sigusr1"), 10);
  EXPECT_EQ(parse_signal("9"), 9);
  EXPECT_EQ(parse_signal("RTMIN+3"), SIGRTMIN + 3);
  EXPECT_THROW(parse_signal("FOO"), Error);
  EXPECT_THROW(parse_signal("0"), Error);
  EXPECT_THROW(parse_signal("65"), Error);
}
