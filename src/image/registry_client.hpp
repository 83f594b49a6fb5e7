// A client for the Docker Registry HTTP API v2 / OCI distribution spec over libcurl: manifests,
// blobs (resumable, verified by the content store), pushes, and the registry's auth dance
// (Bearer tokens from the realm it names, or Basic). It knows nothing of image references,
// registries.conf or unpacking; it never writes anywhere but into the Ingest it is given.
//
// One RegistryClient owns one http::Session (keep-alive, reused connections) and is NOT
// thread-safe: each thread uses its own client (they may share one ContentStore).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "base/error.hpp"
#include "image/auth.hpp"
#include "image/content_store.hpp"

namespace racker::image {

struct Endpoint {
  std::string host;       // host[:port]
  bool insecure = false;  // try https without verification, fall back to plain http
  bool tls_verify = true;
  // /etc/containers/certs.d/<host>/: *.crt are added to the system CAs; client.cert/client.key
  // (or any X.cert with X.key) are presented as the client certificate.
  std::string certs_dir;
};

struct FetchedManifest {
  std::string media_type;
  std::string body;
  std::string digest;  // sha256 of body
};

struct TransferPolicy {
  int max_tries = 5;  // per request; a blob download that makes progress starts counting anew
  std::chrono::milliseconds base_delay{500};   // doubled after each failure
  std::chrono::milliseconds max_delay{30000};  // also caps Retry-After
  std::chrono::seconds connect_timeout{30};
  std::chrono::seconds stall_timeout{60};    // a transfer slower than 1 byte/s for this long fails
  uint64_t upload_chunk_size = 64ull << 20;  // larger blobs are PATCHed in chunks; 0 = never
};

// An error answered by the registry (or the transport). err() is an errno approximation
// (EACCES for 401/403, ENOENT for 404, EAGAIN for 429/5xx, EIO/ECONN* for transport errors).
class RegistryError : public Error {
 public:
  RegistryError(std::string message, int err, long http_status, std::string registry_code,
                bool transient, std::chrono::milliseconds retry_after = {})
      : Error(std::move(message), err),
        http_status_(http_status),
        registry_code_(std::move(registry_code)),
        transient_(transient),
        retry_after_(retry_after) {}
  long http_status() const { return http_status_; }                    // 0 for transport errors
  const std::string& registry_code() const { return registry_code_; }  // e.g. MANIFEST_UNKNOWN
  bool transient() const { return transient_; }
  std::chrono::milliseconds retry_after() const { return retry_after_; }

 private:
  long http_status_;
  std::string registry_code_;
  bool transient_;
  std::chrono::milliseconds retry_after_;
};

class RegistryClient {
 public:
  RegistryClient(Endpoint ep, Credentials creds);
  ~RegistryClient();
  RegistryClient(const RegistryClient&) = delete;
  RegistryClient& operator=(const RegistryClient&) = delete;

  void set_policy(const TransferPolicy& p);

  // GET /v2/<repo>/manifests/<ref> accepting OCI index/manifest and Docker schema2 list/manifest.
  // When ref is a digest the body must hash to it; otherwise a Docker-Content-Digest header
  // must agree with the body. Schema1 answers throw "schema1 manifests are not supported".
  FetchedManifest get_manifest(const std::string& repository, const std::string& reference);

  // Streams a blob into `into` (which it does not commit: the caller calls into.commit()).
  // Resumes from into.offset() with a Range request and falls back to into.reset() when the
  // server answers 200; follows redirects (dropping Authorization on other hosts); retries
  // connection resets, timeouts, 5xx and 429 (honouring Retry-After) with exponential backoff,
  // resuming each time. `on_data` (may be empty) sees the blob's bytes from the offset `into`
  // had on entry onwards, each exactly once and in order, even across retries and resets.
  // size < 0: unknown.
  void get_blob(const std::string& repository, const std::string& digest, int64_t size,
                ContentStore::Ingest& into,
                const std::function<void(const char*, size_t)>& on_data);

  // GET /v2/: the registry speaks the API and accepts the credentials (a Bearer registry's
  // token server is asked for a token without a scope, as `docker login` does). Throws a
  // RegistryError (401 for refused credentials) otherwise.
  void check_login();

  // HEAD /v2/<repo>/blobs/<digest>.
  bool blob_exists(const std::string& repository, const std::string& digest);
  // POST an upload, then one PUT ?digest= (or PATCH chunks then PUT) from the file at path.
  void put_blob(const std::string& repository, const std::string& digest, const std::string& path);
  void put_manifest(const std::string& repository, const std::string& reference,
                    const std::string& media_type, const std::string& body);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace racker::image
