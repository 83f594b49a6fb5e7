// Streaming decompression of layer blobs read from a file descriptor: gzip (ISA-L igzip, multi-
// member), zstd (multi-frame), xz (liblzma, loaded with dlopen when first needed) or none, and the
// pipelined, hashed layer stream built on it. Internal to image/.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "image/unpack.hpp"

namespace racker::image {

class Decompressor {
 public:
  virtual ~Decompressor() = default;
  // Fills out with up to cap bytes, fewer only at the end of the stream; returns 0 once the
  // stream has ended cleanly. Throws racker::Error on corrupt or truncated input.
  virtual size_t read(uint8_t* out, size_t cap) = 0;
};

// Compression::detect reads the first bytes of fd to choose. The decompressor reads fd to EOF.
// If cancel_fd (an eventfd) becomes readable while it waits on a pipe or socket, read() throws.
std::unique_ptr<Decompressor> make_decompressor(int fd, Compression c, int cancel_fd = -1);

// The uncompressed layer stream, produced ahead of its consumer: one helper thread reads and
// decompresses, another hashes it (the diff_id), while the caller parses tar and writes files.
// Helper-thread errors are caught there and rethrown to the caller by next().
class LayerStream {
 public:
  LayerStream(int fd, Compression c);
  ~LayerStream();  // stops the helpers and joins them
  LayerStream(const LayerStream&) = delete;
  LayerStream& operator=(const LayerStream&) = delete;

  // The next chunk of the stream (empty at its end), valid until the following call.
  std::span<const uint8_t> next();
  // Once next() has returned empty: "sha256:<hex>" of the whole stream.
  std::string digest();
  // Bytes handed out by next() so far.
  uint64_t bytes() const { return bytes_; }
  // From now on next() throws racker::Error(message, EFBIG) once the stream passes max_bytes.
  void limit(uint64_t max_bytes, std::string message) {
    max_bytes_ = max_bytes;
    limit_message_ = std::move(message);
  }

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  uint64_t bytes_ = 0;
  uint64_t max_bytes_ = UINT64_MAX;
  std::string limit_message_;
};

}  // namespace racker::image
