// Tar, the one module for it: header decoding (ustar, GNU long names and links, PAX extended
// and global headers, xattrs) shared by every reader here, the streaming reader layers are
// unpacked with, and the writer `save` and layer making use (write_tree: a directory as a
// layer). Reading parses and checks; it never touches the filesystem. Internal to image/.
#pragma once

#include <time.h>

#include <cstdint>
#include <functional>
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
  std::string path{};      // as written in the archive (PAX or GNU long name applied)
  std::string linkpath{};  // symlink target or hardlink source
  uint64_t size = 0;       // data bytes that follow (only regular files carry data to extract)
  uint32_t mode = 0;       // permission bits plus setuid, setgid and sticky
  uint32_t uid = 0;
  uint32_t gid = 0;
  timespec mtime{};
  timespec atime{};  // equals mtime unless the archive records an access time
  uint32_t devmajor = 0;
  uint32_t devminor = 0;
  std::vector<std::pair<std::string, std::string>> xattrs{};  // name -> raw value
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

// A tar writer: ustar headers, PAX records where ustar has no room (long paths and link
// targets, large sizes, ids and times, xattrs as SCHILY.xattr.<name>), numbers past the octal
// fields also in GNU base-256. Throws racker::Error on write errors.
class TarWriter {
 public:
  using Sink = std::function<void(const void*, size_t)>;
  using Producer = std::function<void(const Sink&)>;
  explicit TarWriter(int fd);  // writes to fd
  explicit TarWriter(Sink out);
  // Entries owned by root and dated 1970 (reproducible archives, as `save` writes).
  void add_dir(const std::string& path, uint32_t mode = 0755);
  void add_file(const std::string& path, std::string_view data, uint32_t mode = 0644);
  // produce() must hand exactly size bytes to its sink.
  void add_file(const std::string& path, uint64_t size, const Producer& produce,
                uint32_t mode = 0644);
  void add_symlink(const std::string& path, const std::string& target);
  // Any entry, as TarReader reads it back: type, path, link, mode (setuid, setgid, sticky
  // included), owner, mtime (seconds), device numbers and xattrs. A regular file's e.size
  // bytes come from produce (exactly that many); other types carry no data.
  void add(const TarEntry& e, const Producer& produce = {});
  // The end-of-archive marker (two zero blocks).
  void finish();
  uint64_t bytes() const { return written_; }

 private:
  void header(const TarEntry& e, uint64_t size);
  void data(const std::string& path, uint64_t size, const Producer& produce);
  void write(const void* p, size_t n);
  Sink out_;
  uint64_t written_ = 0;
};

struct WriteTreeOptions {
  // Entries (paths as written, "./a/b", directories "./a/") left out; a directory left out is
  // not walked.
  std::function<bool(const std::string& path)> skip;
};
// Writes the tree at dir as `tar -C dir --numeric-owner --xattrs
// --xattrs-include=security.capability -c .` did: "./" first, then every entry below it as
// "./path" (directories "./path/") in byte order of names, depth first, so the output depends
// only on the tree. Symlinks are written, never followed; a second name of an inode becomes a
// hardlink to the first; sockets are left out. Regular files are read whole (holes as zeros).
// Errors name the path on the host.
void write_tree(TarWriter& w, const std::string& dir, const WriteTreeOptions& o = {});

}  // namespace racker::image
