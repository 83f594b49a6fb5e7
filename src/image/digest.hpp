// Content digests ("sha256:<64 hex>") and a streaming SHA-256.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

namespace racker::image {

// Checks "sha256:<64 lower-case hex>" (sha512 too); throws racker::Error naming the value.
void validate_digest(std::string_view digest);
// "sha256:abc..." -> "abc..." (after validation).
std::string digest_hex(std::string_view digest);

class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;
  void update(const void* data, size_t len);
  // "sha256:<hex>"; the object may not be updated afterwards.
  std::string digest();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

std::string sha256_digest(std::string_view data);
// "sha256:<hex>" of a file's content; throws naming the path.
std::string sha256_of_file(const std::string& path);

}  // namespace racker::image
