// Tar, the one module for it: header decoding (ustar, GNU long names and links, PAX extended
// and global headers, xattrs) shared by every reader here, and the streaming reader layers are
// unpacked with. Reading parses and checks; it never touches the filesystem. Internal to image/.
#pragma once

#include <time.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
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

namespace tar {
inline constexpr size_t kBlock = 512;
// Zero bytes that follow n bytes of data up to the next block.
inline uint64_t padding(uint64_t n) {
  return (kBlock - n % kBlock) % kBlock;
}
bool is_zero_block(const uint8_t* h);
// The header's checksum field matches its bytes (unsigned or historic signed sum).
bool checksum_ok(const uint8_t* h);
}  // namespace tar

// Decodes header blocks: the one place that knows the formats. A driver reads the blocks (from
// a stream, a file, ...), hands each that is not all zeros to header(), the data of a meta
// header to meta(), and an entry's header to entry(), which applies the meta headers read since
// the previous entry. Errors are racker::Error naming the position (where()).
class TarHeaderDecoder {
 public:
  TarHeaderDecoder();
  ~TarHeaderDecoder();
  TarHeaderDecoder(const TarHeaderDecoder&) = delete;
  TarHeaderDecoder& operator=(const TarHeaderDecoder&) = delete;

  struct Header {
    enum class Kind {
      meta,   // PAX ('x', 'g') or GNU long name/link ('L', 'K'): pass its data to meta()
      skip,   // not a file (a GNU volume label): its data is skipped
      entry,  // a file: pass the block to entry()
    };
    Kind kind;
    char type;          // the typeflag
    uint64_t size;      // of the data in the header's size field
    uint64_t meta_max;  // meta: the largest size accepted (the data is held in memory)
    const char* what;   // meta: what it is, for messages ("pax header", "GNU long name", ...)
  };
  // Checks the checksum and size field of a header block that is not all zeros.
  Header header(const uint8_t* h) const;
  // The data (h.size bytes) of a meta header.
  void meta(const Header& h, std::string_view data);
  // Fills e from an entry's header block and the meta headers before it (which are then
  // forgotten; global PAX records stay). Returns the size of the data that follows the header
  // in the archive (e.size is that for a regular file, 0 for others). Throws on sparse files
  // and unsupported entry types.
  uint64_t entry(const uint8_t* h, TarEntry& e);
  // The current entry's data has been read (for messages: "after entry ...").
  void leave_entry() { in_entry_ = false; }
  // Where the decoder is, for messages: "at the first entry", "at entry \"x\"", ...
  std::string where() const;

 private:
  struct Pax;
  std::unique_ptr<Pax> local_, global_;
  std::optional<std::string> long_name_, long_link_;
  std::string last_;  // path of the last entry decoded
  bool in_entry_ = false;
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
  bool more();
  const uint8_t* block();
  void skip(uint64_t n);
  std::string read_meta(const TarHeaderDecoder::Header& h);
  std::string where() const { return dec_.where(); }

  LayerStream& src_;
  std::span<const uint8_t> cur_;  // unread part of the current chunk
  bool eof_ = false;
  uint8_t staged_[tar::kBlock];  // a header that straddles two chunks
  uint64_t data_left_ = 0;       // of the current entry
  uint64_t pad_left_ = 0;        // zero padding after it, up to the next 512-byte block
  TarHeaderDecoder dec_;
};

}  // namespace racker::image
