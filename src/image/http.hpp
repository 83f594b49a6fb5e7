// HTTP over libcurl, which is loaded with dlopen("libcurl.so.4") the first time it is needed:
// commands that never touch the network (run, ps, images, ...) do not pay the dynamic loader
// for libcurl and the ~30 libraries it drags in (TLS, Kerberos, LDAP, IDN, ...).
//
// A Session owns one easy handle (keep-alive, reused connections, TLS session cache) and is not
// thread-safe. It knows nothing of registries: no auth dance and no redirect following; the
// registry client (registry_client.cpp) builds on it.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace racker::image::http {

constexpr size_t kMaxErrorBody = 64 << 10;  // error bodies are only read for their message

// A transfer that got no complete HTTP answer (refused, reset, timed out, TLS failure, ...).
struct TransportError {
  std::string message;  // curl's, e.g. "failed to connect to 127.0.0.1 port 1: ..."
  int err = 0;          // errno approximation (ECONNREFUSED, ETIMEDOUT, ECONNRESET, ...)
  bool transient = false;
};

struct Response {
  long status = 0;
  std::vector<std::pair<std::string, std::string>> headers;  // names lower-cased
  std::string body;        // non-2xx bodies, and 2xx bodies when the request has no sink
  bool too_large = false;  // a buffered 2xx body passed its limit (the transfer was aborted)
  std::string url;         // the URL this response answers
  std::string redirect_url;
  std::optional<TransportError> failure;

  bool transport_ok() const { return !failure; }
  // The last value of a header (name lower-case), "" when absent.
  std::string header(std::string_view name) const;
};

struct Request {
  std::string method = "GET";  // GET, HEAD, POST, PUT or PATCH
  std::string url;
  std::vector<std::string> headers;  // "Name: value"
  // Request body: in memory, or a range of a file (POST without a body sends an empty one).
  bool has_body = false;
  std::string_view body;
  int body_fd = -1;
  uint64_t body_offset = 0;
  uint64_t body_len = 0;
  // 2xx response bodies go here instead of Response::body; false aborts the transfer.
  std::function<bool(const Response&, const char*, size_t)> sink;
  size_t max_body = kMaxErrorBody;
};

struct SessionOptions {
  bool tls_verify = true;
  std::string ca_bundle;                // PEM replacing the default CA file when not empty
  std::string client_cert, client_key;  // PEM files
  std::chrono::seconds connect_timeout{30};
  std::chrono::seconds stall_timeout{60};  // slower than 1 byte/s for this long fails
};

class Session {
 public:
  Session();  // loads libcurl: throws Error("libcurl.so.4 could not be loaded: ...")
  ~Session();
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  SessionOptions options;

  // One exchange with `url` (not q.url, which callers keep as the original), plus extra_header
  // when not empty; no redirects are followed. Exceptions thrown by q.sink are rethrown.
  Response perform(const Request& q, const std::string& url, std::string_view extra_header = {});

  // The CA file libcurl was built to use ("" when unknown).
  std::string default_ca_file();

 private:
  struct Handle;
  std::unique_ptr<Handle> h_;
};

// URL helpers (libcurl's URL parser).
// "scheme://host:port" with the default port filled in; the input itself when unparsable.
std::string origin_of(const std::string& url);
// A Location header resolved against the URL that returned it; throws EINVAL when unparsable.
std::string resolve_url(const std::string& base, const std::string& ref);
// Percent-encodes everything but unreserved characters.
std::string escape(const std::string& s);

// Loads libcurl now (it is otherwise loaded by the first Session or helper call); throws the
// same Error as they would.
void load_libcurl();

}  // namespace racker::image::http
