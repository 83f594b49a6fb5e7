// A streaming tar reader for layer unpacking: ustar, GNU (long names and links) and PAX
// (extended and global headers, xattrs). It parses and checks; it never touches the filesystem.
// Internal to image/.
#pragma once

#include <time.h>

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "image/decompress.hpp"

namespace racker::image {

struct TarEntry {
  enum class Type : char {
    file = '0',
    hardlink = '1',
    symlink = '2',
    chardev = '3',
    blockdev = '4',
    dir = '5',
    fifo = '6',
  };
  Type type = Type::file;
  std::string path;      // as written in the archive (PAX or GNU long name applied)
  std::string linkpath;  // symlink target or hardlink source
  uint64_t size = 0;     // data bytes that follow (only regular files carry data to extract)
  uint32_t mode = 0;     // permission bits plus setuid, setgid and sticky
  uint32_t uid = 0;
  uint32_t gid = 0;
  timespec mtime{};
  timespec atime{};  // equals mtime unless the archive records an access time
  uint32_t devmajor = 0;
  uint32_t devminor = 0;
  std::vector<std::pair<std::string, std::string>> xattrs;  // name -> raw value
};

class TarReader {
 public:
  explicit TarReader(LayerStream& src);
  ~TarReader();
  TarReader(const TarReader&) = delete;
  TarReader& operator=(const TarReader&) = delete;

  // Skips what is left of the current entry and reads the next header (with its PAX and GNU
  // meta headers). Returns false at the end-of-archive marker. Throws on a bad or truncated
  // archive, naming the entry.
  bool next(TarEntry& e);
  // The next piece of the current entry's data (a view into the stream's buffers, valid until
  // the next call); empty once all of it has been read.
  std::span<const uint8_t> read_data();
  // After next() returned false: reads whatever follows the end-of-archive marker, so the
  // digest covers the whole stream.
  void drain();

 private:
  struct Pax;
  bool more();
  const uint8_t* block();
  void skip(uint64_t n);
  std::string read_meta(uint64_t size, uint64_t limit, const char* what);
  std::string where() const;

  LayerStream& src_;
  std::span<const uint8_t> cur_;  // unread part of the current chunk
  bool eof_ = false;
  uint8_t staged_[512];     // a header that straddles two chunks
  uint64_t data_left_ = 0;  // of the current entry
  uint64_t pad_left_ = 0;   // zero padding after it, up to the next 512-byte block
  std::string last_;        // path of the last entry read, for messages
  bool in_entry_ = false;
  std::unique_ptr<Pax> global_;
};

}  // namespace racker::image
