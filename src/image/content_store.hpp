// The content store: content-addressed blobs (manifests, configs, layers) under
// <root>/blobs/sha256/<hex>, and resumable downloads under <root>/ingest/<hex>.partial.
//
// A blob only ever appears under blobs/ by an atomic rename after its size and digest were
// verified and its data fsynced, so a crash (kill -9) at any moment leaves either no blob or a
// complete verified one, plus possibly a .partial that the next ingest resumes from. Bytes that
// do not match their digest are never stored. The store knows nothing of images, tags or layers
// and never unpacks anything.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/fd.hpp"
#include "image/digest.hpp"

namespace racker::image {

class ContentStore {
 public:
  explicit ContentStore(std::string root = "/var/lib/racker");

  const std::string& root() const { return root_; }
  // Only sha256 digests are stored; other algorithms throw Error(EINVAL).
  bool has(const std::string& digest) const;
  std::string blob_path(const std::string& digest) const;
  // Whole blob in memory (manifests, configs), re-verified against its digest; throws if absent.
  std::string read_blob(const std::string& digest) const;
  // Verifies data against expected_digest (when given) and commits it atomically; returns its
  // digest. A mismatch throws and stores nothing.
  std::string put_blob(std::string_view data, const std::string& expected_digest = "");

  // One in-flight download. It holds an exclusive flock on its .partial for its whole life, so
  // two pullers of the same blob (threads or processes) serialise; the second one finds the
  // blob committed when it gets the lock. Not thread-safe itself. Destroying an Ingest without
  // commit() keeps the .partial for a later resume.
  class Ingest {
   public:
    Ingest(Ingest&&) noexcept;
    Ingest& operator=(Ingest&&) noexcept;
    ~Ingest();

    const std::string& digest() const { return digest_; }
    // -1 when the size is not known.
    int64_t expected_size() const { return expected_size_; }
    // Bytes already on disk (the resume point); their hash state was rebuilt by re-reading them.
    uint64_t offset() const { return offset_; }
    // Appends and hashes. Writing past the expected size deletes the partial and throws.
    void write(const void* data, size_t n);
    // Verifies size and digest, fsyncs, makes the file read-only and renames it into blobs/.
    // A mismatch deletes the partial and throws "digest mismatch for sha256:..: got sha256:..".
    void commit();
    // Truncates to 0 (the server ignored our Range and sends the blob from the start).
    void reset();

   private:
    friend class ContentStore;
    Ingest() = default;
    void discard();  // removes the partial and makes this Ingest unusable
    void check_usable() const;

    std::string digest_;
    int64_t expected_size_ = -1;
    std::string partial_path_;
    std::string blob_path_;
    UniqueFd fd_;
    std::unique_ptr<Sha256> hash_;
    uint64_t offset_ = 0;
  };

  // Returns nullopt if the blob is already present, possibly committed by a concurrent puller
  // while we waited for its lock. Blocks while another Ingest of the same digest is alive.
  // expected_size < 0 means unknown (only the digest is checked then).
  std::optional<Ingest> begin_ingest(const std::string& digest, int64_t expected_size);
  // "sha256:<hex>" of every committed blob, sorted.
  std::vector<std::string> list_blobs() const;
  // Removes a committed blob; absent is not an error.
  void remove_blob(const std::string& digest);

 private:
  std::string hex_of(const std::string& digest) const;  // validates, sha256 only
  std::string root_;
};

}  // namespace racker::image
