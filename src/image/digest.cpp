#include "image/digest.hpp"

#include <openssl/evp.h>

#include <cerrno>

#include "base/error.hpp"

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
  EVP_MD_CTX* ctx = nullptr;
};

Sha256::Sha256() : impl_(std::make_unique<Impl>()) {
  impl_->ctx = EVP_MD_CTX_new();
  if (!impl_->ctx || EVP_DigestInit_ex(impl_->ctx, EVP_sha256(), nullptr) != 1)
    throw Error("sha256: cannot initialise OpenSSL digest", EIO);
}

Sha256::~Sha256() {
  EVP_MD_CTX_free(impl_->ctx);
}

void Sha256::update(const void* data, size_t len) {
  EVP_DigestUpdate(impl_->ctx, data, len);
}

std::string Sha256::digest() {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  EVP_DigestFinal_ex(impl_->ctx, md, &n);
  static const char* hex = "0123456789abcdef";
  std::string out = "sha256:";
  for (unsigned i = 0; i < n; ++i) {
    out.push_back(hex[md[i] >> 4]);
    out.push_back(hex[md[i] & 15]);
  }
  return out;
}

std::string sha256_digest(std::string_view data) {
  Sha256 h;
  h.update(data.data(), data.size());
  return h.digest();
}

}  // namespace racker::image
