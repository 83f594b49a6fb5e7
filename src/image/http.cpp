#include "image/http.hpp"

#define CURL_DISABLE_TYPECHECK  // we call through pointers, not the checked macros
#include <curl/curl.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <exception>

#include "base/dynlib.hpp"
#include "base/error.hpp"
#include "base/strings.hpp"

#ifndef RACKER_VERSION
#define RACKER_VERSION "dev"
#endif

namespace racker::image::http {

namespace {

// ---- the lazily loaded library -------------------------------------------------------------

// Only the functions this file calls: each one's type comes from curl.h.
struct Curl {
  decltype(&::curl_global_init) global_init;
  decltype(&::curl_easy_init) easy_init;
  decltype(&::curl_easy_cleanup) easy_cleanup;
  decltype(&::curl_easy_reset) easy_reset;
  decltype(&::curl_easy_setopt) easy_setopt;
  decltype(&::curl_easy_perform) easy_perform;
  decltype(&::curl_easy_getinfo) easy_getinfo;
  decltype(&::curl_easy_strerror) easy_strerror;
  decltype(&::curl_easy_escape) easy_escape;
  decltype(&::curl_slist_append) slist_append;
  decltype(&::curl_slist_free_all) slist_free_all;
  decltype(&::curl_free) free;
  decltype(&::curl_url) url;
  decltype(&::curl_url_cleanup) url_cleanup;
  decltype(&::curl_url_set) url_set;
  decltype(&::curl_url_get) url_get;
};

struct Loaded {
  Curl fn{};
  std::string error;  // set when loading failed
};

Loaded load() {
  Loaded l;
  // never unloaded: libcurl keeps global state (and OpenSSL its atexit handlers)
  void* lib = open_library("libcurl.so.4", l.error);
  if (!lib) return l;
  Curl& c = l.fn;
  std::string& err = l.error;
  resolve_symbol(lib, "curl_global_init", c.global_init, err);
  resolve_symbol(lib, "curl_easy_init", c.easy_init, err);
  resolve_symbol(lib, "curl_easy_cleanup", c.easy_cleanup, err);
  resolve_symbol(lib, "curl_easy_reset", c.easy_reset, err);
  resolve_symbol(lib, "curl_easy_setopt", c.easy_setopt, err);
  resolve_symbol(lib, "curl_easy_perform", c.easy_perform, err);
  resolve_symbol(lib, "curl_easy_getinfo", c.easy_getinfo, err);
  resolve_symbol(lib, "curl_easy_strerror", c.easy_strerror, err);
  resolve_symbol(lib, "curl_easy_escape", c.easy_escape, err);
  resolve_symbol(lib, "curl_slist_append", c.slist_append, err);
  resolve_symbol(lib, "curl_slist_free_all", c.slist_free_all, err);
  resolve_symbol(lib, "curl_free", c.free, err);
  resolve_symbol(lib, "curl_url", c.url, err);
  resolve_symbol(lib, "curl_url_cleanup", c.url_cleanup, err);
  resolve_symbol(lib, "curl_url_set", c.url_set, err);
  resolve_symbol(lib, "curl_url_get", c.url_get, err);
  if (err.empty()) {
    CURLcode rc = c.global_init(CURL_GLOBAL_DEFAULT);
    if (rc != CURLE_OK) err = std::string("curl_global_init: ") + c.easy_strerror(rc);
  }
  return l;
}

// Loads libcurl once (thread-safe); every call after a failure throws the same error.
const Curl& curl() {
  static const Loaded loaded = load();
  if (!loaded.error.empty())
    throw Error("libcurl.so.4 could not be loaded: " + loaded.error, ELIBACC);
  return loaded.fn;
}

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

// ---- transfers -----------------------------------------------------------------------------

struct Transfer {
  const Request* req;
  Response* resp;
  std::exception_ptr error;
  uint64_t sent = 0;
};

size_t on_header(char* p, size_t size, size_t n, void* ud) {
  auto* t = static_cast<Transfer*>(ud);
  std::string_view line(p, size * n);
  if (line.starts_with("HTTP/")) {  // a new response (after a 100 or within redirects)
    t->resp->headers.clear();
    auto sp = line.find(' ');
    if (sp != std::string_view::npos)
      t->resp->status = std::strtol(std::string(line.substr(sp + 1, 3)).c_str(), nullptr, 10);
    return size * n;
  }
  auto colon = line.find(':');
  if (colon != std::string_view::npos)
    t->resp->headers.emplace_back(lower(trim(line.substr(0, colon))), trim(line.substr(colon + 1)));
  return size * n;
}

size_t on_body(char* p, size_t size, size_t n, void* ud) {
  auto* t = static_cast<Transfer*>(ud);
  size_t len = size * n;
  Response& r = *t->resp;
  bool ok = r.status >= 200 && r.status < 300;
  if (ok && t->req->sink) {
    try {  // never let an exception unwind through libcurl
      return t->req->sink(r, p, len) ? len : 0;
    } catch (...) {
      t->error = std::current_exception();
      return 0;
    }
  }
  if (r.body.size() + len > t->req->max_body) {
    if (ok) {
      r.too_large = true;
      return 0;
    }
    r.body.append(p, t->req->max_body - std::min(t->req->max_body, r.body.size()));
    return len;  // an error body: keep the start, drop the rest
  }
  r.body.append(p, len);
  return len;
}

size_t on_read(char* p, size_t size, size_t n, void* ud) {
  auto* t = static_cast<Transfer*>(ud);
  const Request& q = *t->req;
  uint64_t total = q.body_fd >= 0 ? q.body_len : q.body.size();
  size_t want = static_cast<size_t>(std::min<uint64_t>(size * n, total - t->sent));
  if (want == 0) return 0;
  if (q.body_fd >= 0) {
    ssize_t got;
    do {
      got = ::pread(q.body_fd, p, want, static_cast<off_t>(q.body_offset + t->sent));
    } while (got < 0 && errno == EINTR);
    if (got <= 0) return CURL_READFUNC_ABORT;
    want = static_cast<size_t>(got);
  } else {
    std::memcpy(p, q.body.data() + t->sent, want);
  }
  t->sent += want;
  return want;
}

bool transient(CURLcode c) {
  switch (c) {
    case CURLE_COULDNT_CONNECT:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_PARTIAL_FILE:
    case CURLE_GOT_NOTHING:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
      return true;
    default:
      return false;
  }
}

int errno_of(CURLcode c) {
  switch (c) {
    case CURLE_COULDNT_CONNECT:
      return ECONNREFUSED;
    case CURLE_OPERATION_TIMEDOUT:
      return ETIMEDOUT;
    case CURLE_RECV_ERROR:
    case CURLE_SEND_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE:
      return ECONNRESET;
    case CURLE_COULDNT_RESOLVE_HOST:
      return EHOSTUNREACH;
    default:
      return EIO;
  }
}

// ---- URLs ----------------------------------------------------------------------------------

struct Url {
  const Curl& c;
  CURLU* u;
  Url() : c(curl()), u(c.url()) {
    if (!u) throw Error("curl_url: out of memory", ENOMEM);
  }
  ~Url() { c.url_cleanup(u); }
  Url(const Url&) = delete;
  Url& operator=(const Url&) = delete;

  bool set(const std::string& s) { return c.url_set(u, CURLUPART_URL, s.c_str(), 0) == CURLUE_OK; }
  std::string get(CURLUPart part, unsigned flags = 0) const {
    char* s = nullptr;
    if (c.url_get(u, part, &s, flags) != CURLUE_OK) return "";
    std::string out = s ? s : "";
    c.free(s);
    return out;
  }
};

}  // namespace

std::string Response::header(std::string_view name) const {
  for (auto it = headers.rbegin(); it != headers.rend(); ++it)
    if (it->first == name) return it->second;
  return "";
}

void load_libcurl() {
  curl();
}

std::string origin_of(const std::string& url) {
  Url u;
  if (!u.set(url)) return url;
  return lower(u.get(CURLUPART_SCHEME)) + "://" + lower(u.get(CURLUPART_HOST)) + ":" +
         u.get(CURLUPART_PORT, CURLU_DEFAULT_PORT);
}

std::string resolve_url(const std::string& base, const std::string& ref) {
  Url u;
  if (!u.set(base) || !u.set(ref))
    throw Error("cannot resolve location \"" + ref + "\" against " + base, EINVAL);
  return u.get(CURLUPART_URL);
}

std::string escape(const std::string& s) {
  const Curl& c = curl();
  char* e = c.easy_escape(nullptr, s.c_str(), static_cast<int>(s.size()));
  if (!e) throw Error("curl_easy_escape: out of memory", ENOMEM);
  std::string out = e;
  c.free(e);
  return out;
}

// ---- sessions ------------------------------------------------------------------------------

struct Session::Handle {
  const Curl& c;
  CURL* easy;
  Handle() : c(curl()), easy(c.easy_init()) {
    if (!easy) throw Error("cannot initialise libcurl", ENOMEM);
  }
  ~Handle() { c.easy_cleanup(easy); }
};

Session::Session() : h_(std::make_unique<Handle>()) {}
Session::~Session() = default;

std::string Session::default_ca_file() {
  char* path = nullptr;
  if (h_->c.easy_getinfo(h_->easy, CURLINFO_CAINFO, &path) != CURLE_OK || !path) return "";
  return path;
}

Response Session::perform(const Request& q, const std::string& url, std::string_view extra_header) {
  const Curl& c = h_->c;
  CURL* curl = h_->easy;
  const SessionOptions& o = options;
  Response r;
  r.url = url;
  Transfer t{&q, &r, nullptr, 0};
  char errbuf[CURL_ERROR_SIZE] = "";
  c.easy_reset(curl);  // keeps live connections, DNS and TLS session caches
  c.easy_setopt(curl, CURLOPT_URL, url.c_str());
  c.easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
  c.easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
  c.easy_setopt(curl, CURLOPT_ERRORBUFFER, errbuf);
  c.easy_setopt(curl, CURLOPT_USERAGENT, "racker/" RACKER_VERSION);
  c.easy_setopt(curl, CURLOPT_CONNECTTIMEOUT, static_cast<long>(o.connect_timeout.count()));
  c.easy_setopt(curl, CURLOPT_LOW_SPEED_LIMIT, 1L);
  c.easy_setopt(curl, CURLOPT_LOW_SPEED_TIME, static_cast<long>(o.stall_timeout.count()));
  c.easy_setopt(curl, CURLOPT_TCP_KEEPALIVE, 1L);
  c.easy_setopt(curl, CURLOPT_HEADERFUNCTION, on_header);
  c.easy_setopt(curl, CURLOPT_HEADERDATA, &t);
  c.easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_body);
  c.easy_setopt(curl, CURLOPT_WRITEDATA, &t);
  if (!o.tls_verify) {
    c.easy_setopt(curl, CURLOPT_SSL_VERIFYPEER, 0L);
    c.easy_setopt(curl, CURLOPT_SSL_VERIFYHOST, 0L);
  }
  curl_blob ca{const_cast<char*>(o.ca_bundle.data()), o.ca_bundle.size(), CURL_BLOB_NOCOPY};
  if (!o.ca_bundle.empty()) c.easy_setopt(curl, CURLOPT_CAINFO_BLOB, &ca);
  if (!o.client_cert.empty()) {
    c.easy_setopt(curl, CURLOPT_SSLCERT, o.client_cert.c_str());
    c.easy_setopt(curl, CURLOPT_SSLKEY, o.client_key.c_str());
  }

  std::unique_ptr<curl_slist, void (*)(curl_slist*)> headers(nullptr, c.slist_free_all);
  auto add = [&](const std::string& h) {
    curl_slist* l = c.slist_append(headers.get(), h.c_str());
    if (!l) throw Error("curl_slist_append: out of memory", ENOMEM);
    headers.release();
    headers.reset(l);
  };
  for (const auto& h : q.headers) add(h);
  if (!extra_header.empty()) add(std::string(extra_header));
  add("Expect:");
  c.easy_setopt(curl, CURLOPT_HTTPHEADER, headers.get());

  if (q.method == "HEAD") {
    c.easy_setopt(curl, CURLOPT_NOBODY, 1L);
  } else if (q.method == "POST" && !q.has_body) {
    c.easy_setopt(curl, CURLOPT_POST, 1L);
    c.easy_setopt(curl, CURLOPT_POSTFIELDSIZE, 0L);
    c.easy_setopt(curl, CURLOPT_POSTFIELDS, "");
  } else if (q.method == "PUT" || q.method == "PATCH") {
    c.easy_setopt(curl, CURLOPT_UPLOAD, 1L);
    uint64_t len = q.body_fd >= 0 ? q.body_len : q.body.size();
    c.easy_setopt(curl, CURLOPT_INFILESIZE_LARGE, static_cast<curl_off_t>(len));
    c.easy_setopt(curl, CURLOPT_READFUNCTION, on_read);
    c.easy_setopt(curl, CURLOPT_READDATA, &t);
    if (q.method == "PATCH") c.easy_setopt(curl, CURLOPT_CUSTOMREQUEST, "PATCH");
  } else if (q.method != "GET") {
    throw Error("unsupported HTTP method " + q.method, EINVAL);
  }

  CURLcode rc = c.easy_perform(curl);
  if (t.error) std::rethrow_exception(t.error);
  if (rc != CURLE_OK && !(rc == CURLE_WRITE_ERROR && r.too_large)) {
    std::string msg = errbuf[0] ? errbuf : c.easy_strerror(rc);
    while (!msg.empty() && msg.back() == '\n') msg.pop_back();
    r.failure = TransportError{std::move(msg), errno_of(rc), transient(rc)};
    return r;
  }
  c.easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &r.status);
  char* loc = nullptr;
  if (c.easy_getinfo(curl, CURLINFO_REDIRECT_URL, &loc) == CURLE_OK && loc) r.redirect_url = loc;
  return r;
}

}  // namespace racker::image::http
