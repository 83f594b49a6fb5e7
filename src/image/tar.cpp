#include "image/tar.hpp"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <optional>
#include <string_view>

#include "base/error.hpp"

namespace racker::image {
namespace {

using tar::kBlock;
using tar::padding;
// Meta headers (PAX records, GNU long names) are held in memory: cap them.
constexpr uint64_t kMaxPax = 8 << 20;
constexpr uint64_t kMaxLongName = 64 << 10;

// ustar header layout (POSIX.1-1988 plus the GNU variant's atime).
struct Field {
  size_t off, len;
};
constexpr Field kName{0, 100}, kMode{100, 8}, kUid{108, 8}, kGid{116, 8}, kSize{124, 12},
    kMtime{136, 12}, kChksum{148, 8}, kLinkname{157, 100}, kMagic{257, 8}, kDevmajor{329, 8},
    kDevminor{337, 8}, kPrefix{345, 155}, kGnuAtime{345, 12};
constexpr size_t kTypeflag = 156;

std::string_view str_field(const uint8_t* h, Field f) {
  const char* p = reinterpret_cast<const char*>(h + f.off);
  return {p, strnlen(p, f.len)};
}

// Octal (space/NUL padded) or GNU base-256 (high bit of the first byte set).
std::optional<int64_t> num_field(const uint8_t* h, Field f) {
  const uint8_t* p = h + f.off;
  if (p[0] & 0x80) {
    uint8_t inv = (p[0] & 0x40) ? 0xff : 0;
    uint64_t x = 0;
    for (size_t i = 0; i < f.len; ++i) {
      uint8_t c = p[i] ^ inv;
      if (i == 0) c &= 0x7f;
      if (x >> 56) return std::nullopt;
      x = x << 8 | c;
    }
    if (x >> 63) return std::nullopt;
    return inv ? ~static_cast<int64_t>(x) : static_cast<int64_t>(x);
  }
  size_t i = 0;
  while (i < f.len && (p[i] == ' ' || p[i] == 0)) ++i;
  uint64_t x = 0;
  for (; i < f.len && p[i] >= '0' && p[i] <= '7'; ++i) {
    if (x >> 60) return std::nullopt;
    x = x << 3 | (p[i] - '0');
  }
  for (; i < f.len; ++i)
    if (p[i] != ' ' && p[i] != 0) return std::nullopt;
  return static_cast<int64_t>(x);
}

std::optional<uint64_t> parse_dec(std::string_view s) {
  if (s.empty() || s.size() > 19) return std::nullopt;
  uint64_t x = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return std::nullopt;
    x = x * 10 + static_cast<uint64_t>(c - '0');
  }
  return x;
}

// PAX times: "[-]seconds[.fraction]".
std::optional<timespec> parse_pax_time(std::string_view s) {
  bool neg = !s.empty() && s[0] == '-';
  if (neg) s.remove_prefix(1);
  size_t dot = s.find('.');
  auto sec = parse_dec(s.substr(0, dot));
  if (!sec || *sec > static_cast<uint64_t>(INT64_MAX)) return std::nullopt;
  long nsec = 0;
  if (dot != std::string_view::npos) {
    std::string_view frac = s.substr(dot + 1);
    long scale = 100000000;
    for (char c : frac) {
      if (c < '0' || c > '9') return std::nullopt;
      nsec += (c - '0') * scale;
      scale /= 10;
    }
  }
  timespec ts{static_cast<time_t>(*sec), nsec};
  if (neg) {
    ts.tv_sec = -ts.tv_sec;
    if (nsec) {
      ts.tv_sec -= 1;
      ts.tv_nsec = 1000000000 - nsec;
    }
  }
  return ts;
}

int unhex(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// libarchive percent-encodes xattr names in LIBARCHIVE.xattr.<name>.
std::optional<std::string> url_decode(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '%') {
      out.push_back(s[i]);
      continue;
    }
    if (i + 2 >= s.size()) return std::nullopt;
    int hi = unhex(s[i + 1]), lo = unhex(s[i + 2]);
    if (hi < 0 || lo < 0) return std::nullopt;
    out.push_back(static_cast<char>(hi << 4 | lo));
    i += 2;
  }
  return out;
}

std::optional<std::string> base64_decode(std::string_view s) {
  auto val = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
  };
  std::string out;
  uint32_t acc = 0;
  int bits = 0;
  for (char c : s) {
    if (c == '=') break;
    int v = val(c);
    if (v < 0) return std::nullopt;
    acc = acc << 6 | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>((acc >> bits) & 0xff));
    }
  }
  return out;
}

void set_xattr(std::vector<std::pair<std::string, std::string>>& v, std::string name,
               std::string value) {
  for (auto& [n, val] : v)
    if (n == name) {
      val = std::move(value);
      return;
    }
  v.emplace_back(std::move(name), std::move(value));
}

}  // namespace

namespace tar {

bool is_zero_block(const uint8_t* h) {
  uint64_t acc = 0;
  for (size_t i = 0; i < kBlock; i += 8) {
    uint64_t w;
    std::memcpy(&w, h + i, 8);
    acc |= w;
  }
  return acc == 0;
}

bool checksum_ok(const uint8_t* h) {
  auto want = num_field(h, kChksum);
  if (!want) return false;
  int64_t usum = 0, ssum = 0;
  for (size_t i = 0; i < kBlock; ++i) {
    uint8_t c = (i >= kChksum.off && i < kChksum.off + kChksum.len) ? ' ' : h[i];
    usum += c;
    ssum += static_cast<int8_t>(c);  // some historic writers summed signed chars
  }
  return *want == usum || *want == ssum;
}

}  // namespace tar

// Values from PAX records; unset ones fall back to the global records, then to the header.
struct TarHeaderDecoder::Pax {
  std::optional<std::string> path, linkpath;
  std::optional<uint64_t> size, uid, gid;
  std::optional<timespec> mtime, atime;
  std::vector<std::pair<std::string, std::string>> xattrs;
  bool sparse = false;

  void parse(std::string_view data, const std::string& where) {
    auto bad = [&](const char* why) {
      return Error(std::string("invalid pax header ") + where + ": " + why, EINVAL);
    };
    while (!data.empty()) {
      size_t sp = data.find(' ');
      if (sp == std::string_view::npos) {
        // NUL padding after the last record is tolerated, as GNU tar does.
        if (std::all_of(data.begin(), data.end(), [](char c) { return c == 0; })) return;
        throw bad("record without length");
      }
      auto len = parse_dec(data.substr(0, sp));
      if (!len || *len < sp + 3 || *len > data.size()) throw bad("bad record length");
      std::string_view rec = data.substr(sp + 1, *len - sp - 1);
      data.remove_prefix(*len);
      if (rec.back() != '\n') throw bad("record not ended by a newline");
      rec.remove_suffix(1);
      size_t eq = rec.find('=');
      if (eq == std::string_view::npos) throw bad("record without '='");
      std::string_view key = rec.substr(0, eq), value = rec.substr(eq + 1);
      apply(key, value, bad);
    }
  }

  template <typename Bad>
  void apply(std::string_view key, std::string_view value, Bad bad) {
    // An empty value removes the keyword (falls back to the header field).
    auto number = [&](std::optional<uint64_t>& dst, uint64_t max) {
      if (value.empty()) return dst.reset();
      auto n = parse_dec(value);
      if (!n || *n > max) throw bad(("bad " + std::string(key)).c_str());
      dst = n;
    };
    auto time = [&](std::optional<timespec>& dst) {
      if (value.empty()) return dst.reset();
      auto t = parse_pax_time(value);
      if (!t) throw bad(("bad " + std::string(key)).c_str());
      dst = t;
    };
    if (key == "path") {
      if (value.empty()) return path.reset();
      path = std::string(value);
    } else if (key == "linkpath") {
      if (value.empty()) return linkpath.reset();
      linkpath = std::string(value);
    } else if (key == "size") {
      number(size, INT64_MAX);
    } else if (key == "uid") {
      number(uid, UINT32_MAX);
    } else if (key == "gid") {
      number(gid, UINT32_MAX);
    } else if (key == "mtime") {
      time(mtime);
    } else if (key == "atime") {
      time(atime);
    } else if (key.starts_with("SCHILY.xattr.")) {
      key.remove_prefix(13);
      if (key.empty()) throw bad("empty xattr name");
      set_xattr(xattrs, std::string(key), std::string(value));
    } else if (key.starts_with("LIBARCHIVE.xattr.")) {
      key.remove_prefix(17);
      auto name = url_decode(key);
      auto val = base64_decode(value);
      if (!name || name->empty() || !val) throw bad("bad LIBARCHIVE.xattr record");
      set_xattr(xattrs, std::move(*name), std::move(*val));
    } else if (key.starts_with("GNU.sparse.")) {
      sparse = true;
    }
    // Everything else (uname, gname, ctime, comment, charset, ACLs, ...) is not needed.
  }
};

// --- TarHeaderDecoder ------------------------------------------------------------------------

TarHeaderDecoder::TarHeaderDecoder()
    : local_(std::make_unique<Pax>()), global_(std::make_unique<Pax>()) {}

TarHeaderDecoder::~TarHeaderDecoder() = default;

std::string TarHeaderDecoder::where() const {
  if (last_.empty()) return "at the first entry";
  return (in_entry_ ? "at entry \"" : "after entry \"") + last_ + "\"";
}

TarHeaderDecoder::Header TarHeaderDecoder::header(const uint8_t* h) const {
  if (!tar::checksum_ok(h)) throw Error("invalid tar header checksum " + where(), EINVAL);
  auto size = num_field(h, kSize);
  if (!size || *size < 0) throw Error("invalid size field in tar header " + where(), EINVAL);
  Header out{Header::Kind::entry, static_cast<char>(h[kTypeflag]), static_cast<uint64_t>(*size), 0,
             ""};
  switch (out.type) {
    case 'x':
      return {Header::Kind::meta, out.type, out.size, kMaxPax, "pax header"};
    case 'g':
      return {Header::Kind::meta, out.type, out.size, kMaxPax, "pax global header"};
    case 'L':
      return {Header::Kind::meta, out.type, out.size, kMaxLongName, "GNU long name"};
    case 'K':
      return {Header::Kind::meta, out.type, out.size, kMaxLongName, "GNU long link name"};
    case 'V':  // GNU volume label: not a file
      out.kind = Header::Kind::skip;
      return out;
    default:
      return out;
  }
}

void TarHeaderDecoder::meta(const Header& h, std::string_view data) {
  switch (h.type) {
    case 'x':
      local_->parse(data, where());
      break;
    case 'g':
      global_->parse(data, where());
      break;
    case 'L':
      long_name_ = std::string(data.substr(0, data.find('\0')));
      break;
    case 'K':
      long_link_ = std::string(data.substr(0, data.find('\0')));
      break;
    default:
      break;
  }
}

uint64_t TarHeaderDecoder::entry(const uint8_t* h, TarEntry& e) {
  // The meta headers apply to this entry only, whatever happens below.
  const Pax local = std::exchange(*local_, Pax{});
  std::optional<std::string> long_name = std::exchange(long_name_, std::nullopt);
  std::optional<std::string> long_link = std::exchange(long_link_, std::nullopt);
  char type = static_cast<char>(h[kTypeflag]);
  auto size = num_field(h, kSize);
  if (!size || *size < 0) throw Error("invalid size field in tar header " + where(), EINVAL);

  // Combine the header with the meta headers that preceded it.
  bool posix = std::memcmp(h + kMagic.off, "ustar\0", 6) == 0;
  bool gnu = std::memcmp(h + kMagic.off, "ustar  \0", 8) == 0;
  if (local.path) {
    e.path = *local.path;
  } else if (long_name) {
    e.path = *long_name;
  } else {
    std::string_view prefix = posix ? str_field(h, kPrefix) : std::string_view{};
    e.path.clear();
    if (!prefix.empty()) {
      e.path.append(prefix);
      e.path.push_back('/');
    }
    e.path.append(str_field(h, kName));
  }
  last_ = e.path;
  in_entry_ = true;
  if (local.linkpath)
    e.linkpath = *local.linkpath;
  else if (long_link)
    e.linkpath = *long_link;
  else
    e.linkpath = std::string(str_field(h, kLinkname));

  if (local.sparse || global_->sparse || type == 'S')
    throw Error("sparse file " + where() + " is not supported", ENOTSUP);
  if (e.path.find('\0') != std::string::npos || e.linkpath.find('\0') != std::string::npos)
    throw Error("NUL byte in a path " + where(), EINVAL);
  if (e.path.empty()) throw Error("empty path in tar header " + where(), EINVAL);

  auto pick = [&](const std::optional<uint64_t>& l, const std::optional<uint64_t>& g, Field f,
                  const char* name) -> uint64_t {
    if (l) return *l;
    if (g) return *g;
    auto v = num_field(h, f);
    if (!v || *v < 0 || static_cast<uint64_t>(*v) > UINT32_MAX)
      throw Error(std::string("invalid ") + name + " field in tar header " + where(), EINVAL);
    return static_cast<uint64_t>(*v);
  };
  e.uid = static_cast<uint32_t>(pick(local.uid, global_->uid, kUid, "uid"));
  e.gid = static_cast<uint32_t>(pick(local.gid, global_->gid, kGid, "gid"));
  auto mode = num_field(h, kMode);
  if (!mode || *mode < 0) throw Error("invalid mode field in tar header " + where(), EINVAL);
  e.mode = static_cast<uint32_t>(*mode) & 07777;
  e.devmajor = e.devminor = 0;
  if (type == '3' || type == '4') {
    auto ma = num_field(h, kDevmajor), mi = num_field(h, kDevminor);
    if (!ma || !mi || *ma < 0 || *mi < 0 || *ma > UINT32_MAX || *mi > UINT32_MAX)
      throw Error("invalid device number in tar header " + where(), EINVAL);
    e.devmajor = static_cast<uint32_t>(*ma);
    e.devminor = static_cast<uint32_t>(*mi);
  }
  if (local.mtime) {
    e.mtime = *local.mtime;
  } else if (global_->mtime) {
    e.mtime = *global_->mtime;
  } else {
    auto t = num_field(h, kMtime);
    if (!t) throw Error("invalid mtime field in tar header " + where(), EINVAL);
    e.mtime = {static_cast<time_t>(*t), 0};
  }
  e.atime = e.mtime;
  if (local.atime) {
    e.atime = *local.atime;
  } else if (global_->atime) {
    e.atime = *global_->atime;
  } else if (gnu) {
    auto t = num_field(h, kGnuAtime);
    if (t && *t > 0) e.atime = {static_cast<time_t>(*t), 0};
  }
  e.xattrs = global_->xattrs;
  for (auto& [n, v] : local.xattrs) set_xattr(e.xattrs, n, v);

  uint64_t data_size = local.size ? *local.size : static_cast<uint64_t>(*size);
  switch (type) {
    case '0':
    case '\0':
    case '7':
      // Pre-POSIX archives mark directories with a trailing slash on a regular entry.
      e.type = e.path.back() == '/' ? TarEntry::Type::dir : TarEntry::Type::file;
      break;
    case '1':
    case '2':
    case '3':
    case '4':
    case '5':
    case '6':
      e.type = static_cast<TarEntry::Type>(type);
      break;
    case 'D':  // GNU dump directory: its data is a listing, not content
      e.type = TarEntry::Type::dir;
      break;
    default: {
      char t[8];
      snprintf(t, sizeof t, "0x%02x", static_cast<uint8_t>(type));
      throw Error(std::string("unsupported tar entry type ") + t + " " + where(), ENOTSUP);
    }
  }
  // Data of other entry types (e.g. a hardlink carrying data) is there but not content.
  e.size = e.type == TarEntry::Type::file ? data_size : 0;
  return data_size;
}

// --- TarReader -------------------------------------------------------------------------------

TarReader::TarReader(LayerStream& src) : src_(src) {}

TarReader::~TarReader() = default;

bool TarReader::more() {
  if (eof_) return false;
  try {
    cur_ = src_.next();
  } catch (const Error& e) {
    throw e.with_context("layer stream " + where());
  }
  eof_ = cur_.empty();
  return !eof_;
}

// The next 512-byte block, nullptr at a clean EOF. Points into the stream's chunk (valid until
// more() is called again) or, when it straddles two chunks, into staged_.
const uint8_t* TarReader::block() {
  if (cur_.empty() && !more()) return nullptr;
  if (cur_.size() >= kBlock) {
    const uint8_t* p = cur_.data();
    cur_ = cur_.subspan(kBlock);
    return p;
  }
  size_t have = 0;
  while (have < kBlock) {
    if (cur_.empty() && !more()) throw Error("truncated tar stream " + where(), EIO);
    size_t k = std::min(kBlock - have, cur_.size());
    std::memcpy(staged_ + have, cur_.data(), k);
    cur_ = cur_.subspan(k);
    have += k;
  }
  return staged_;
}

std::span<const uint8_t> TarReader::read_data() {
  if (data_left_ == 0) return {};
  if (cur_.empty() && !more()) throw Error("truncated tar stream " + where(), EIO);
  size_t n = static_cast<size_t>(std::min<uint64_t>(data_left_, cur_.size()));
  auto out = cur_.first(n);
  cur_ = cur_.subspan(n);
  data_left_ -= n;
  return out;
}

void TarReader::skip(uint64_t n) {
  while (n > 0) {
    if (cur_.empty() && !more()) throw Error("truncated tar stream " + where(), EIO);
    size_t k = static_cast<size_t>(std::min<uint64_t>(n, cur_.size()));
    cur_ = cur_.subspan(k);
    n -= k;
  }
}

std::string TarReader::read_meta(const TarHeaderDecoder::Header& h) {
  if (h.size > h.meta_max)
    throw Error(std::string(h.what) + " of " + std::to_string(h.size) + " bytes " + where() +
                    " is too large",
                EINVAL);
  std::string out;
  out.reserve(h.size);
  data_left_ = h.size;
  for (auto s = read_data(); !s.empty(); s = read_data())
    out.append(reinterpret_cast<const char*>(s.data()), s.size());
  skip(padding(h.size));
  return out;
}

bool TarReader::next(TarEntry& e) {
  // Finish the previous entry: unread data plus padding.
  skip(data_left_ + pad_left_);
  data_left_ = pad_left_ = 0;
  dec_.leave_entry();

  for (;;) {
    const uint8_t* h = block();
    if (!h) {
      if (src_.bytes() == 0) return false;  // an empty stream: an empty layer
      throw Error("truncated tar stream " + where() + ": no end-of-archive marker", EIO);
    }
    if (tar::is_zero_block(h)) {
      // The end-of-archive marker is two zero blocks; a lone one at EOF is accepted like GNU tar.
      const uint8_t* h2 = block();
      if (h2 && !tar::is_zero_block(h2))
        throw Error("invalid end-of-archive marker " + where(), EINVAL);
      return false;
    }
    TarHeaderDecoder::Header hd = dec_.header(h);
    switch (hd.kind) {
      case TarHeaderDecoder::Header::Kind::meta:
        dec_.meta(hd, read_meta(hd));
        continue;
      case TarHeaderDecoder::Header::Kind::skip:
        skip(hd.size + padding(hd.size));
        continue;
      case TarHeaderDecoder::Header::Kind::entry:
        break;
    }
    uint64_t data_size = dec_.entry(h, e);
    data_left_ = data_size;
    pad_left_ = padding(data_size);
    if (e.type != TarEntry::Type::file) {
      skip(data_left_ + pad_left_);
      data_left_ = pad_left_ = 0;
    }
    return true;
  }
}

void TarReader::drain() {
  cur_ = {};
  while (more()) cur_ = {};
}

}  // namespace racker::image
