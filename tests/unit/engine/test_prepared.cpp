// PreparedContainer rolls back what it made unless committed, whatever is thrown.
#include <gtest/gtest.h>

#include <cstdlib>
#include <stdexcept>
#include <string>

#include "base/fs.hpp"
#include "engine/run.hpp"
#include "test_support.hpp"

namespace racker::engine {
namespace {

struct Store : test::TempDir {
  Store() : TempDir("racker-prepared") {}
  // a container directory as prepare_container leaves it (no overlay mounted)
  PreparedContainer make(const std::string& id) const {
    PreparedContainer p;
    p.id = id;
    p.store_root = root;
    p.cdir = root + "/containers/" + id;
    p.rootfs = p.cdir + "/rootfs";
    mkdir_p(p.rootfs, 0755);
    write_file_atomic(p.cdir + "/config.json", "{}");
    return p;
  }
  const std::string& root = path();
};

TEST(PreparedContainer, AnyExceptionRollsBackANewContainer) {
  Store s;
  try {
    auto p = s.make("a");
    throw 42;  // not even a std::exception
  } catch (int) {
  }
  EXPECT_FALSE(path_exists(s.root + "/containers/a"));
  try {
    auto p = s.make("b");
    throw std::bad_alloc();
  } catch (const std::bad_alloc&) {
  }
  EXPECT_FALSE(path_exists(s.root + "/containers/b"));
}

TEST(PreparedContainer, CommittedKeptFilesAndMovedFromStay) {
  Store s;
  {
    auto p = s.make("c");
    p.commit();
  }
  EXPECT_TRUE(path_exists(s.root + "/containers/c/config.json"));
  try {
    auto p = s.make("d");
    p.keep_files = true;  // an existing container started again
    throw std::runtime_error("start failed");
  } catch (const std::runtime_error&) {
  }
  EXPECT_TRUE(path_exists(s.root + "/containers/d/config.json"));
  {
    auto p = s.make("e");
    PreparedContainer q = std::move(p);  // p goes first, with nothing to roll back
    EXPECT_TRUE(path_exists(s.root + "/containers/e/config.json"));
  }
  EXPECT_FALSE(path_exists(s.root + "/containers/e"));  // q rolled back
  {
    auto p = s.make("f");
    p.discard();
    mkdir_p(s.root + "/containers/f", 0700);  // made again by someone else afterwards
  }
  EXPECT_TRUE(path_exists(s.root + "/containers/f"));  // discard is once, not again on exit
}

}  // namespace
}  // namespace racker::engine
