#include <gtest/gtest.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <thread>

#include "base/error.hpp"
#include "base/fs.hpp"
#include "image/content_store.hpp"
#include "image/digest.hpp"
#include "test_support.hpp"

using namespace racker;
using namespace racker::image;

namespace {

class ContentStoreTest : public ::testing::Test {
 protected:
  std::string partial(const std::string& digest) {
    return dir_ + "/ingest/" + digest.substr(7) + ".partial";
  }
  test::TempDir tmp_{"racker-cs"};
  const std::string dir_ = tmp_.path();
};

std::string blob_of(size_t n, char seed) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>(seed + i * 31 % 251);
  return s;
}

}  // namespace

TEST(Digest, Sha256OfFileAcrossReadChunks) {
  test::TempDir tmp("racker-digest");
  std::string data = blob_of((3 << 20) + 12345, 'q');  // more than one 1 MiB read
  write_file_atomic(tmp.path() + "/f", data);
  EXPECT_EQ(sha256_of_file(tmp.path() + "/f"), sha256_digest(data));
  write_file_atomic(tmp.path() + "/empty", "");
  EXPECT_EQ(sha256_of_file(tmp.path() + "/empty"),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  try {
    sha256_of_file(tmp.path() + "/missing");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(tmp.path() + "/missing"), std::string::npos);
  }
}

TEST_F(ContentStoreTest, PutReadHasListRemove) {
  ContentStore cs(dir_);
  std::string data = "{\"hello\":\"world\"}";
  std::string d = sha256_digest(data);
  EXPECT_FALSE(cs.has(d));
  EXPECT_TRUE(cs.list_blobs().empty());
  EXPECT_EQ(cs.put_blob(data), d);
  EXPECT_EQ(cs.put_blob(data, d), d);  // idempotent
  EXPECT_TRUE(cs.has(d));
  EXPECT_EQ(cs.read_blob(d), data);
  EXPECT_EQ(cs.blob_path(d), dir_ + "/blobs/sha256/" + d.substr(7));
  struct stat st;
  ASSERT_EQ(stat(cs.blob_path(d).c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0444u);
  EXPECT_FALSE(path_exists(partial(d)));
  EXPECT_EQ(cs.list_blobs(), std::vector<std::string>{d});
  cs.remove_blob(d);
  EXPECT_FALSE(cs.has(d));
  cs.remove_blob(d);  // absent is fine
  try {
    cs.read_blob(d);
    FAIL() << "read_blob of an absent blob";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()), "blob " + d + " not found in " + dir_);
    EXPECT_EQ(e.err(), ENOENT);
  }
  EXPECT_THROW(cs.has("sha256:xyz"), Error);
  EXPECT_THROW(cs.has("sha256:../../etc/passwd"), Error);
}

TEST_F(ContentStoreTest, PutBlobMismatchIsNeverStored) {
  ContentStore cs(dir_);
  std::string wrong = sha256_digest("other");
  EXPECT_EQ(test::error_of([&] { cs.put_blob("data", wrong); }),
            "digest mismatch for " + wrong + ": got " + sha256_digest("data"));
  EXPECT_FALSE(cs.has(wrong));
  EXPECT_FALSE(cs.has(sha256_digest("data")));
  EXPECT_TRUE(cs.list_blobs().empty());
}

TEST_F(ContentStoreTest, IngestResumesAfterPartialWrite) {
  ContentStore cs(dir_);
  std::string data = blob_of(3 << 20, 'a');  // > the 1 MiB re-read buffer
  std::string d = sha256_digest(data);
  size_t half = data.size() / 2 + 7;
  {
    auto in = cs.begin_ingest(d, static_cast<int64_t>(data.size()));
    ASSERT_TRUE(in);
    EXPECT_EQ(in->offset(), 0u);
    in->write(data.data(), half);
    EXPECT_EQ(in->offset(), half);
    EXPECT_FALSE(cs.has(d));
  }  // dropped without commit: the partial stays
  EXPECT_TRUE(path_exists(partial(d)));
  auto in = cs.begin_ingest(d, static_cast<int64_t>(data.size()));
  ASSERT_TRUE(in);
  EXPECT_EQ(in->offset(), half);
  in->write(data.data() + half, data.size() - half);
  in->commit();
  EXPECT_TRUE(cs.has(d));
  EXPECT_FALSE(path_exists(partial(d)));
  EXPECT_EQ(read_file(cs.blob_path(d)), data);
  EXPECT_FALSE(cs.begin_ingest(d, static_cast<int64_t>(data.size())));
  EXPECT_THROW(in->write("x", 1), Error);  // committed
}

TEST_F(ContentStoreTest, IngestResetStartsOver) {
  ContentStore cs(dir_);
  std::string data = "abcdef";
  std::string d = sha256_digest(data);
  auto in = cs.begin_ingest(d, -1);
  ASSERT_TRUE(in);
  in->write("zzz", 3);
  in->reset();
  EXPECT_EQ(in->offset(), 0u);
  in->write(data.data(), data.size());
  in->commit();
  EXPECT_EQ(cs.read_blob(d), data);
}

TEST_F(ContentStoreTest, KilledWriterLeavesOnlyAResumablePartial) {
  ContentStore cs(dir_);
  std::string data = blob_of(8 << 20, 'k');
  std::string d = sha256_digest(data);
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    try {
      auto in = cs.begin_ingest(d, static_cast<int64_t>(data.size()));
      for (size_t off = 0;; off = (off + 4096) % data.size()) {
        if (in->offset() + 4096 > data.size()) pause();  // never commit
        in->write(data.data() + off, 4096);
        usleep(50);
      }
    } catch (...) {
    }
    _exit(1);
  }
  while (!path_exists(partial(d)) || read_file(partial(d)).size() < 100000) usleep(1000);
  kill(pid, SIGKILL);
  int status = 0;
  waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFSIGNALED(status));
  EXPECT_FALSE(cs.has(d));
  auto in = cs.begin_ingest(d, static_cast<int64_t>(data.size()));  // the lock died with it
  ASSERT_TRUE(in);
  uint64_t off = in->offset();
  EXPECT_GE(off, 100000u);
  EXPECT_LT(off, data.size());
  in->write(data.data() + off, data.size() - off);
  in->commit();
  EXPECT_EQ(read_file(cs.blob_path(d)), data);
}

TEST_F(ContentStoreTest, DigestMismatchDeletesThePartial) {
  ContentStore cs(dir_);
  std::string d = sha256_digest("the real thing");
  auto in = cs.begin_ingest(d, 14);
  ASSERT_TRUE(in);
  in->write("a lying server", 14);
  EXPECT_EQ(test::error_of([&] { in->commit(); }),
            "digest mismatch for " + d + ": got " + sha256_digest("a lying server"));
  EXPECT_FALSE(cs.has(d));
  EXPECT_FALSE(path_exists(partial(d)));
  EXPECT_TRUE(cs.list_blobs().empty());
  EXPECT_THROW(in->commit(), Error);
}

TEST_F(ContentStoreTest, SizeMismatch) {
  ContentStore cs(dir_);
  std::string d = sha256_digest("12345");
  {
    auto in = cs.begin_ingest(d, 5);
    in->write("123", 3);
    EXPECT_EQ(test::error_of([&] { in->commit(); }),
              "size mismatch for " + d + ": expected 5 bytes, got 3");
  }
  EXPECT_FALSE(path_exists(partial(d)));
  {
    auto in = cs.begin_ingest(d, 5);
    EXPECT_EQ(in->offset(), 0u);
    in->write("1234", 4);
    EXPECT_THROW(in->write("56", 2), Error);  // past the expected size
  }
  EXPECT_FALSE(cs.has(d));
  EXPECT_FALSE(path_exists(partial(d)));
  // A partial longer than the expected size (e.g. left by a lying server) is not resumed.
  {
    auto in = cs.begin_ingest(d, -1);
    in->write("123456789", 9);
  }
  auto in = cs.begin_ingest(d, 5);
  EXPECT_EQ(in->offset(), 0u);
  in->write("12345", 5);
  in->commit();
  EXPECT_TRUE(cs.has(d));
}

TEST_F(ContentStoreTest, ConcurrentIngestOfOneDigestYieldsOneBlob) {
  ContentStore cs(dir_);
  std::string data = blob_of(1 << 20, 'c');
  std::string d = sha256_digest(data);
  std::atomic<bool> first_has_lock{false}, second_waiting{false};
  std::optional<bool> second_got_ingest;
  std::thread first([&] {
    auto in = cs.begin_ingest(d, static_cast<int64_t>(data.size()));
    ASSERT_TRUE(in);
    in->write(data.data(), data.size() / 2);
    first_has_lock = true;
    while (!second_waiting) std::this_thread::yield();
    std::this_thread::sleep_for(std::chrono::milliseconds(50));  // the second one blocks
    in->write(data.data() + data.size() / 2, data.size() - data.size() / 2);
    in->commit();
  });
  std::thread second([&] {
    while (!first_has_lock) std::this_thread::yield();
    second_waiting = true;
    auto in = cs.begin_ingest(d, static_cast<int64_t>(data.size()));
    second_got_ingest = in.has_value();
  });
  first.join();
  second.join();
  ASSERT_TRUE(second_got_ingest.has_value());
  EXPECT_FALSE(*second_got_ingest);  // it found the blob committed by the first
  EXPECT_EQ(cs.list_blobs(), std::vector<std::string>{d});
  EXPECT_EQ(read_file(cs.blob_path(d)), data);
  EXPECT_FALSE(path_exists(partial(d)));
}

TEST_F(ContentStoreTest, WaiterStartsAfreshWhenTheHolderFails) {
  ContentStore cs(dir_);
  std::string data = "good bytes";
  std::string d = sha256_digest(data);
  std::atomic<bool> locked{false};
  std::thread bad([&] {
    auto in = cs.begin_ingest(d, 10);
    in->write("bad  bytes", 10);
    locked = true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    EXPECT_THROW(in->commit(), Error);
  });
  while (!locked) std::this_thread::yield();
  auto in = cs.begin_ingest(d, 10);  // blocks until the bad one discarded its partial
  bad.join();
  ASSERT_TRUE(in);
  EXPECT_EQ(in->offset(), 0u);
  in->write(data.data(), data.size());
  in->commit();
  EXPECT_EQ(cs.read_blob(d), data);
}
