#include "image/digest.hpp"

// The low-level SHA256_* functions (deprecated in OpenSSL 3, still supported) run the same
// assembly as EVP without EVP's start-up: no openssl.cnf parsing, no provider loading (~1 ms on
// every racker run). Linked from libcrypto.a they add ~30 KB and no libcrypto.so.3 to load.
#define OPENSSL_SUPPRESS_DEPRECATED
#include <openssl/sha.h>

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <vector>

#include "base/error.hpp"
#include "base/fd.hpp"

namespace racker::image {

void validate_digest(std::string_view d) {
  auto colon = d.find(':');
  std::string_view algo = d.substr(0, colon == std::string_view::npos ? 0 : colon);
  std::string_view hex = colon == std::string_view::npos ? "" : d.substr(colon + 1);
  size_t want = algo == "sha256" ? 64 : algo == "sha512" ? 128 : 0;
  bool ok = want != 0 && hex.size() == want;
  for (char c : hex) ok &= (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
  if (!ok) throw Error("invalid digest \"" + std::string(d) + "\"", EINVAL);
}

std::string digest_hex(std::string_view d) {
  validate_digest(d);
  return std::string(d.substr(d.find(':') + 1));
}

struct Sha256::Impl {
  SHA256_CTX ctx;
};

Sha256::Sha256() : impl_(std::make_unique<Impl>()) {
  if (SHA256_Init(&impl_->ctx) != 1) throw Error("sha256: cannot initialise the digest", EIO);
}

Sha256::~Sha256() = default;

void Sha256::update(const void* data, size_t len) {
  SHA256_Update(&impl_->ctx, data, len);
}

std::string Sha256::digest() {
  unsigned char md[SHA256_DIGEST_LENGTH];
  SHA256_Final(md, &impl_->ctx);
  static const char* hex = "0123456789abcdef";
  std::string out = "sha256:";
  for (unsigned char b : md) {
    out.push_back(hex[b >> 4]);
    out.push_back(hex[b & 15]);
  }
  return out;
}

std::string sha256_digest(std::string_view data) {
  Sha256 h;
  h.update(data.data(), data.size());
  return h.digest();
}

std::string sha256_of_file(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) throw_errno("open " + path);
  Sha256 h;
  std::vector<char> buf(1 << 20);
  for (;;) {
    ssize_t n = ::read(fd.get(), buf.data(), buf.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw_errno("read " + path);
    if (n == 0) break;
    h.update(buf.data(), static_cast<size_t>(n));
  }
  return h.digest();
}

}  // namespace racker::image
