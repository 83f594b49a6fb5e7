#include "image/decompress.hpp"

#include <isa-l/igzip_lib.h>
#include <lzma.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zstd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <exception>
#include <mutex>
#include <string>
#include <thread>

#include "base/dynlib.hpp"
#include "base/error.hpp"
#include "base/fd.hpp"
#include "image/digest.hpp"

namespace racker::image {
namespace {

// Compressed input is read in large chunks: fewer syscalls, and the decoders run longer loops.
constexpr size_t kInputChunk = 1 << 20;

// Reads the compressed fd. On a pipe or socket a read can block for as long as the sender
// likes, so it first waits on both fd and cancel_fd, letting the consumer stop the reader.
class Source {
 public:
  Source(int fd, int cancel_fd) : fd_(fd), cancel_fd_(cancel_fd) {
    struct stat st;
    stream_ = fstat(fd, &st) == 0 && !S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode);
    may_block_ = stream_ && cancel_fd >= 0;
  }
  // A pipe or socket: data arrives in pieces, and waiting for a full buffer only adds latency.
  bool stream() const { return stream_; }
  size_t read(uint8_t* buf, size_t len) {
    for (;;) {
      if (may_block_) {
        pollfd p[2] = {{.fd = fd_, .events = POLLIN, .revents = 0},
                       {.fd = cancel_fd_, .events = POLLIN, .revents = 0}};
        if (poll(p, 2, -1) < 0) {
          if (errno == EINTR) continue;
          throw_errno("poll layer stream");
        }
        if (p[1].revents) throw Error("layer stream: reading cancelled", ECANCELED);
      }
      ssize_t n = ::read(fd_, buf, len);
      if (n >= 0) return static_cast<size_t>(n);
      if (errno != EINTR && errno != EAGAIN) throw_errno("read layer stream");
    }
  }

 private:
  int fd_;
  int cancel_fd_;
  bool stream_ = false;
  bool may_block_ = false;
};

// Bytes already taken from fd to sniff the format, handed back first.
struct Prefix {
  uint8_t bytes[8];
  size_t len = 0;
};

// The compressed side: a large buffer refilled from fd, starting with the sniffed prefix.
class Input {
 public:
  Input(Source src, const Prefix& p) : src_(src), buf_(std::make_unique<uint8_t[]>(kInputChunk)) {
    std::memcpy(buf_.get(), p.bytes, p.len);
    len_ = p.len;
  }
  // Reads the next chunk; returns false at EOF.
  bool refill() { return refill_after(nullptr, 0); }
  // Moves the n unconsumed bytes at rest to the front and reads more after them.
  bool refill_after(const uint8_t* rest, size_t n) {
    if (n) std::memmove(buf_.get(), rest, n);
    len_ = n;
    if (eof_) return false;
    size_t got = src_.read(buf_.get() + n, kInputChunk - n);
    if (got == 0) eof_ = true;
    len_ += got;
    return got > 0;
  }
  uint8_t* data() { return buf_.get(); }
  size_t len() const { return len_; }
  bool eof() const { return eof_; }
  // After the compressed stream ended: everything left (here and in fd) must be zero padding.
  void expect_zero_padding(const uint8_t* p, size_t n, const char* what) {
    for (;;) {
      if (std::any_of(p, p + n, [](uint8_t b) { return b != 0; }))
        throw Error(std::string("trailing garbage after ") + what + " stream", EINVAL);
      if (!refill()) return;
      p = buf_.get();
      n = len_;
    }
  }

 private:
  Source src_;
  std::unique_ptr<uint8_t[]> buf_;
  size_t len_ = 0;
  bool eof_ = false;
};

class PlainReader : public Decompressor {
 public:
  PlainReader(Source src, const Prefix& p) : src_(src), prefix_(p) {}
  size_t read(uint8_t* out, size_t cap) override {
    size_t got = 0;
    if (prefix_.len) {
      got = std::min(cap, prefix_.len);
      std::memcpy(out, prefix_.bytes, got);
      std::memmove(prefix_.bytes, prefix_.bytes + got, prefix_.len - got);
      prefix_.len -= got;
    }
    // From a file, fill the whole buffer so file data is written in big pieces; from a pipe,
    // pass on what has arrived.
    while (got < cap && !eof_) {
      size_t n = src_.read(out + got, cap - got);
      if (n == 0) eof_ = true;
      got += n;
      if (got && src_.stream()) break;
    }
    return got;
  }

 private:
  Source src_;
  Prefix prefix_;
  bool eof_ = false;
};

const char* isal_error(int r) {
  switch (r) {
    case ISAL_INVALID_BLOCK:
      return "invalid deflate block";
    case ISAL_INVALID_SYMBOL:
      return "invalid deflate symbol";
    case ISAL_INVALID_LOOKBACK:
      return "invalid deflate lookback distance";
    case ISAL_INVALID_WRAPPER:
      return "invalid gzip header";
    case ISAL_UNSUPPORTED_METHOD:
      return "unsupported gzip compression method";
    case ISAL_INCORRECT_CHECKSUM:
      return "gzip checksum mismatch";
    case ISAL_NEED_DICT:
      return "gzip stream needs a dictionary";
    default:
      return "decompression failed";
  }
}

class GzipReader : public Decompressor {
 public:
  GzipReader(Source src, const Prefix& p) : in_(src, p), st_(std::make_unique<inflate_state>()) {
    isal_inflate_init(st_.get());
    st_->crc_flag = ISAL_GZIP;  // parse the gzip header and verify CRC32 + size of each member
    st_->next_in = in_.data();
    st_->avail_in = static_cast<uint32_t>(in_.len());
  }

  size_t read(uint8_t* out, size_t cap) override {
    if (done_) return 0;
    inflate_state& st = *st_;
    st.next_out = out;
    st.avail_out = static_cast<uint32_t>(std::min<size_t>(cap, UINT32_MAX));
    const uint32_t want = st.avail_out;
    while (st.avail_out > 0) {
      if (st.block_state == ISAL_BLOCK_FINISH) {
        // End of a member: another member may follow (concatenated gzip), or zero padding.
        if (st.avail_in == 0 && !refill()) {
          done_ = true;
          break;
        }
        if (st.next_in[0] == 0) {
          in_.expect_zero_padding(st.next_in, st.avail_in, "gzip");
          st.avail_in = 0;
          done_ = true;
          break;
        }
        if (st.avail_in < 2 && !in_.eof()) {
          in_.refill_after(st.next_in, st.avail_in);
          st.next_in = in_.data();
          st.avail_in = static_cast<uint32_t>(in_.len());
        }
        if (st.avail_in < 2 || st.next_in[0] != 0x1f || st.next_in[1] != 0x8b)
          throw Error("trailing garbage after gzip stream", EINVAL);
        isal_inflate_reset(&st);  // keeps crc_flag and the input pointers
        continue;
      }
      if (st.avail_in == 0) refill();
      uint32_t out_before = st.avail_out, in_before = st.avail_in;
      int r = isal_inflate(&st);
      if (r != ISAL_DECOMP_OK) throw Error(std::string("gzip: ") + isal_error(r), EINVAL);
      if (st.block_state != ISAL_BLOCK_FINISH && in_.eof() && st.avail_in == 0 && in_before == 0 &&
          st.avail_out == out_before)
        throw Error("truncated gzip stream", EIO);
    }
    return want - st.avail_out;
  }

 private:
  bool refill() {
    bool more = in_.refill();
    st_->next_in = in_.data();
    st_->avail_in = static_cast<uint32_t>(in_.len());
    return more;
  }

  Input in_;
  std::unique_ptr<inflate_state> st_;  // ~40 KiB of tables: keep it off the stack
  bool done_ = false;
};

class ZstdReader : public Decompressor {
 public:
  ZstdReader(Source src, const Prefix& p) : in_(src, p), ds_(ZSTD_createDStream()) {
    if (!ds_) throw Error("zstd: cannot allocate a decompression context", ENOMEM);
    ZSTD_initDStream(ds_);
    buf_ = {in_.data(), in_.len(), 0};
  }
  ~ZstdReader() override { ZSTD_freeDStream(ds_); }

  size_t read(uint8_t* out, size_t cap) override {
    if (done_) return 0;
    ZSTD_outBuffer o{out, cap, 0};
    while (o.pos < o.size) {
      if (buf_.pos == buf_.size && !in_.eof()) {
        in_.refill();
        buf_ = {in_.data(), in_.len(), 0};
      }
      bool at_eof = buf_.pos == buf_.size && in_.eof();
      if (at_eof && pending_ == 0) {
        if (!started_) throw Error("empty zstd stream", EIO);
        done_ = true;
        break;
      }
      size_t before = o.pos;
      size_t r = ZSTD_decompressStream(ds_, &o, &buf_);
      if (ZSTD_isError(r)) throw Error(std::string("zstd: ") + ZSTD_getErrorName(r), EINVAL);
      started_ = true;
      pending_ = r;
      // At EOF the decoder may still flush buffered output; once it cannot, the frame is cut.
      if (at_eof && o.pos == before && r != 0) throw Error("truncated zstd stream", EIO);
    }
    return o.pos;
  }

 private:
  Input in_;
  ZSTD_DStream* ds_;
  ZSTD_inBuffer buf_{};
  size_t pending_ = 0;  // last ZSTD_decompressStream result: 0 at a frame boundary
  bool started_ = false;
  bool done_ = false;
};

// liblzma, resolved on first use: only rootfs tarballs (and the odd docker-saved layer) are xz,
// so no other command loads it.
struct Lzma {
  decltype(&lzma_stream_decoder) stream_decoder = nullptr;
  decltype(&lzma_code) code = nullptr;
  decltype(&lzma_end) end = nullptr;

  static const Lzma& get() {
    static const Lzma lib = [] {
      Lzma l;
      std::string error;
      void* h = open_library("liblzma.so.5", error);
      resolve_symbol(h, "lzma_stream_decoder", l.stream_decoder, error);
      resolve_symbol(h, "lzma_code", l.code, error);
      resolve_symbol(h, "lzma_end", l.end, error);
      if (!error.empty())
        throw Error("liblzma.so.5 could not be loaded (apt-get install liblzma5): " + error,
                    ENOENT);
      return l;
    }();
    return lib;
  }
};

const char* lzma_error(lzma_ret r) {
  switch (r) {
    case LZMA_FORMAT_ERROR:
      return "not an xz stream";
    case LZMA_OPTIONS_ERROR:
      return "unsupported xz options";
    case LZMA_DATA_ERROR:
      return "corrupt xz data";
    case LZMA_BUF_ERROR:
      return "truncated xz stream";
    case LZMA_MEM_ERROR:
      return "out of memory";
    case LZMA_MEMLIMIT_ERROR:
      return "xz stream needs too much memory";
    default:
      return "decompression failed";
  }
}

class XzReader : public Decompressor {
 public:
  XzReader(Source src, const Prefix& p) : lib_(Lzma::get()), in_(src, p) {
    // concatenated streams, as xz -d reads them; 1 GiB of dictionary at most
    lzma_ret r = lib_.stream_decoder(&st_, 1ull << 30, LZMA_CONCATENATED);
    if (r != LZMA_OK) throw Error(std::string("xz: ") + lzma_error(r), EINVAL);
    st_.next_in = in_.data();
    st_.avail_in = in_.len();
  }
  ~XzReader() override { lib_.end(&st_); }

  size_t read(uint8_t* out, size_t cap) override {
    if (done_) return 0;
    st_.next_out = out;
    st_.avail_out = cap;
    while (st_.avail_out > 0) {
      if (st_.avail_in == 0 && !in_.eof()) {
        in_.refill();
        st_.next_in = in_.data();
        st_.avail_in = in_.len();
      }
      lzma_action action = st_.avail_in == 0 && in_.eof() ? LZMA_FINISH : LZMA_RUN;
      lzma_ret r = lib_.code(&st_, action);
      if (r == LZMA_STREAM_END) {
        done_ = true;
        break;
      }
      if (r != LZMA_OK) throw Error(std::string("xz: ") + lzma_error(r), EINVAL);
    }
    return cap - st_.avail_out;
  }

 private:
  const Lzma& lib_;
  Input in_;
  lzma_stream st_ = LZMA_STREAM_INIT;
  bool done_ = false;
};

Compression sniff(const Prefix& p) {
  const uint8_t* b = p.bytes;
  if (p.len >= 2 && b[0] == 0x1f && b[1] == 0x8b) return Compression::gzip;
  if (p.len >= 4 && b[1] == 0xb5 && b[2] == 0x2f && b[3] == 0xfd && b[0] == 0x28)
    return Compression::zstd;
  // zstd skippable frame (magic 0x184D2A5?, little-endian)
  if (p.len >= 4 && (b[0] & 0xf0) == 0x50 && b[1] == 0x2a && b[2] == 0x4d && b[3] == 0x18)
    return Compression::zstd;
  if (p.len >= 4 && b[0] == 0xfd && b[1] == '7' && b[2] == 'z' && b[3] == 'X')
    return Compression::xz;
  return Compression::none;
}

}  // namespace

std::unique_ptr<Decompressor> make_decompressor(int fd, Compression c, int cancel_fd) {
  Source src(fd, cancel_fd);
  Prefix p;
  if (c == Compression::detect) {
    while (p.len < 4) {
      size_t n = src.read(p.bytes + p.len, 4 - p.len);
      if (n == 0) break;
      p.len += n;
    }
    c = sniff(p);
  }
  switch (c) {
    case Compression::gzip:
      return std::make_unique<GzipReader>(src, p);
    case Compression::zstd:
      return std::make_unique<ZstdReader>(src, p);
    case Compression::xz:
      return std::make_unique<XzReader>(src, p);
    default:
      return std::make_unique<PlainReader>(src, p);
  }
}

// A ring of chunks: the producer fills slot seq % kSlots, the hasher and the consumer read it
// in order, and a slot is reused once both are done with it.
struct LayerStream::Impl {
  static constexpr size_t kSlots = 8;
  static constexpr size_t kChunk = 1 << 20;  // a multiple of 512: tar headers rarely straddle

  struct Slot {
    std::unique_ptr<uint8_t[]> data = std::make_unique<uint8_t[]>(kChunk);
    size_t len = 0;
  };

  int fd;
  Compression compression;
  UniqueFd cancel;
  std::array<Slot, kSlots> slots;
  std::mutex mu;
  std::condition_variable cv;
  uint64_t produced = 0;  // chunks filled
  uint64_t hashed = 0;    // chunks hashed
  uint64_t consumed = 0;  // chunks released by the consumer
  bool holding = false;   // the consumer holds chunk `consumed`
  bool finished = false;  // the producer is done: `produced` is final
  bool stop = false;
  std::exception_ptr error;
  Sha256 hash;
  std::thread producer, hasher;

  void produce() {
    try {
      auto src = make_decompressor(fd, compression, cancel.get());
      for (uint64_t seq = 0;; ++seq) {
        {
          std::unique_lock lk(mu);
          cv.wait(lk, [&] { return stop || seq < std::min(hashed, consumed) + kSlots; });
          if (stop) break;
        }
        Slot& s = slots[seq % kSlots];
        s.len = src->read(s.data.get(), kChunk);
        if (s.len == 0) break;
        std::lock_guard lk(mu);
        ++produced;
        cv.notify_all();
      }
    } catch (...) {
      std::lock_guard lk(mu);
      error = std::current_exception();
    }
    std::lock_guard lk(mu);
    finished = true;
    cv.notify_all();
  }

  void hash_all() {
    for (uint64_t seq = 0;; ++seq) {
      {
        std::unique_lock lk(mu);
        cv.wait(lk, [&] { return stop || produced > seq || finished; });
        if (stop || produced <= seq) return;
      }
      const Slot& s = slots[seq % kSlots];
      hash.update(s.data.get(), s.len);
      std::lock_guard lk(mu);
      ++hashed;
      cv.notify_all();
    }
  }

  void shutdown() {
    {
      std::lock_guard lk(mu);
      stop = true;
      cv.notify_all();
    }
    uint64_t one = 1;
    if (cancel) (void)!::write(cancel.get(), &one, sizeof one);
    if (producer.joinable()) producer.join();
    if (hasher.joinable()) hasher.join();
  }
};

LayerStream::LayerStream(int fd, Compression c) : impl_(std::make_unique<Impl>()) {
  impl_->fd = fd;
  impl_->compression = c;
  impl_->cancel.reset(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!impl_->cancel) throw_errno("eventfd");
  impl_->producer = std::thread([this] { impl_->produce(); });
  try {
    impl_->hasher = std::thread([this] { impl_->hash_all(); });
  } catch (...) {
    impl_->shutdown();
    throw;
  }
}

LayerStream::~LayerStream() {
  impl_->shutdown();
}

std::span<const uint8_t> LayerStream::next() {
  Impl& m = *impl_;
  std::unique_lock lk(m.mu);
  if (m.holding) {
    ++m.consumed;
    m.holding = false;
    m.cv.notify_all();
  }
  m.cv.wait(lk, [&] { return m.produced > m.consumed || m.finished; });
  if (m.produced > m.consumed) {
    m.holding = true;
    const Impl::Slot& s = m.slots[m.consumed % Impl::kSlots];
    bytes_ += s.len;
    if (bytes_ > max_bytes_) throw Error(limit_message_, EFBIG);
    return {s.data.get(), s.len};
  }
  if (m.error) std::rethrow_exception(m.error);
  return {};
}

std::string LayerStream::digest() {
  Impl& m = *impl_;
  {
    std::unique_lock lk(m.mu);
    m.cv.wait(lk, [&] { return m.finished && m.hashed == m.produced; });
    if (m.error) std::rethrow_exception(m.error);
  }
  m.shutdown();
  return m.hash.digest();
}

}  // namespace racker::image
