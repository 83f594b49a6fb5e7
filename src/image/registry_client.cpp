#include "image/registry_client.hpp"

#include <curl/curl.h>
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string_view>
#include <thread>
#include <vector>

#include "base/fd.hpp"
#include "base/fs.hpp"
#include "base/strings.hpp"
#include "image/digest.hpp"

#ifndef RACKER_VERSION
#define RACKER_VERSION "dev"
#endif

namespace racker::image {

namespace {

using nlohmann::json;
using std::chrono::milliseconds;

constexpr size_t kMaxManifest = 4 << 20;    // as containers/image
constexpr size_t kMaxErrorBody = 64 << 10;  // error bodies are only read for their message
constexpr size_t kMaxTokenBody = 1 << 20;

const char* kManifestAccept =
    "Accept: application/vnd.oci.image.index.v1+json, "
    "application/vnd.oci.image.manifest.v1+json, "
    "application/vnd.docker.distribution.manifest.list.v2+json, "
    "application/vnd.docker.distribution.manifest.v2+json";

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

// ---- requests and responses --------------------------------------------------------------

struct Response {
  long status = 0;
  std::vector<std::pair<std::string, std::string>> headers;  // names lower-cased
  std::string body;        // non-2xx bodies, and 2xx bodies when the request has no sink
  bool too_large = false;  // a buffered 2xx body passed its limit (the transfer was aborted)
  std::string url;         // the URL this response answers
  std::string redirect_url;
  CURLcode curl_code = CURLE_OK;
  std::string curl_error;

  std::string header(std::string_view name) const {
    for (auto it = headers.rbegin(); it != headers.rend(); ++it)
      if (it->first == name) return it->second;
    return "";
  }
};

struct Request {
  std::string method = "GET";
  std::string url;
  std::vector<std::string> headers;
  std::string scope_actions = "pull";
  std::string repository;
  // Request body: in memory, or a range of a file.
  bool has_body = false;
  std::string_view body;
  int body_fd = -1;
  uint64_t body_offset = 0;
  uint64_t body_len = 0;
  // 2xx response bodies go here instead of Response::body; false aborts the transfer.
  std::function<bool(const Response&, const char*, size_t)> sink;
  size_t max_body = kMaxErrorBody;
};

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

// ---- errors --------------------------------------------------------------------------------

std::string status_text(long s) {
  static const std::map<long, const char*> texts = {{400, "bad request"},
                                                    {401, "unauthorized"},
                                                    {403, "forbidden"},
                                                    {404, "not found"},
                                                    {405, "method not allowed"},
                                                    {408, "request timeout"},
                                                    {409, "conflict"},
                                                    {413, "payload too large"},
                                                    {416, "range not satisfiable"},
                                                    {429, "too many requests"},
                                                    {500, "internal server error"},
                                                    {502, "bad gateway"},
                                                    {503, "service unavailable"},
                                                    {504, "gateway timeout"}};
  auto it = texts.find(s);
  return it != texts.end() ? it->second : "unexpected status";
}

bool transient_status(long s) {
  return s == 408 || s == 429 || s == 500 || s == 502 || s == 503 || s == 504;
}

bool transient_curl(CURLcode c) {
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

int curl_errno(CURLcode c) {
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

milliseconds retry_after(const Response& r) {
  auto secs = parse_uint(r.header("retry-after"));
  return secs ? milliseconds(std::min<uint64_t>(*secs, 3600) * 1000) : milliseconds(0);
}

// "GET url: 404 MANIFEST_UNKNOWN: manifest unknown", "GET url: 401 unauthorized: ...".
RegistryError response_error(const std::string& method, const Response& r,
                             bool sent_credentials = false) {
  std::string what = method + " " + r.url + ": ";
  if (r.curl_code != CURLE_OK) {
    std::string msg = r.curl_error;
    // "Failed to connect ..." -> "failed to connect ...", but "SSL ..." stays.
    if (msg.size() > 1 && std::islower(static_cast<unsigned char>(msg[1])))
      msg[0] = static_cast<char>(std::tolower(static_cast<unsigned char>(msg[0])));
    return RegistryError(what + msg, curl_errno(r.curl_code), 0, "", transient_curl(r.curl_code));
  }
  std::string code, detail;
  json j = json::parse(r.body, nullptr, false);
  if (j.is_object()) {
    if (auto e = j.find("errors"); e != j.end() && e->is_array()) {
      for (const auto& item : *e) {
        if (!item.is_object()) continue;
        std::string c = item.value("code", "");
        std::string m = item.value("message", "");
        if (code.empty()) code = c;
        if (!detail.empty()) detail += "; ";
        detail += (r.status == 401 || c.empty()) ? m : c + ": " + m;
        if (r.status == 401) break;
      }
    } else {  // token servers: {"details": ...} or OAuth {"error": ..., "error_description": ...}
      for (const char* k : {"details", "error_description", "error", "message"})
        if (auto v = j.find(k); v != j.end() && v->is_string()) {
          detail = v->get<std::string>();
          break;
        }
    }
  }
  std::string msg = std::to_string(r.status) + " ";
  if (r.status == 401) {
    if (sent_credentials)
      msg += "unauthorized: invalid username or password";
    else
      msg += "unauthorized: " + (detail.empty() ? std::string("authentication required") : detail);
  } else {
    msg += detail.empty() ? status_text(r.status) : detail;
  }
  int err = (r.status == 401 || r.status == 403) ? EACCES
            : r.status == 404                    ? ENOENT
            : transient_status(r.status)         ? EAGAIN
                                                 : EIO;
  return RegistryError(what + msg, err, r.status, code, transient_status(r.status), retry_after(r));
}

// ---- names and URLs ------------------------------------------------------------------------

void validate_repository(const std::string& repo) {
  bool ok = !repo.empty() && repo.size() <= 255 && repo.front() != '/' && repo.back() != '/';
  for (char c : repo)
    ok &= (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-' ||
          c == '/';
  for (const auto& part : split(repo, '/')) ok &= !part.empty() && part != "." && part != "..";
  if (!ok) throw Error("invalid repository name \"" + repo + "\"", EINVAL);
}

void validate_reference(const std::string& ref) {
  if (ref.find(':') != std::string::npos) return validate_digest(ref);
  bool ok = !ref.empty() && ref.size() <= 128 && ref[0] != '.' && ref[0] != '-';
  for (char c : ref)
    ok &= std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.' || c == '-';
  if (!ok) throw Error("invalid tag \"" + ref + "\"", EINVAL);
}

struct CurluDeleter {
  void operator()(CURLU* u) const { curl_url_cleanup(u); }
};

std::string url_part(CURLU* u, CURLUPart part, unsigned flags = 0) {
  char* s = nullptr;
  if (curl_url_get(u, part, &s, flags) != CURLUE_OK) return "";
  std::string out = s;
  curl_free(s);
  return out;
}

// "scheme://host:port" with the default port filled in.
std::string origin_of(const std::string& url) {
  std::unique_ptr<CURLU, CurluDeleter> u(curl_url());
  if (!u || curl_url_set(u.get(), CURLUPART_URL, url.c_str(), 0) != CURLUE_OK) return url;
  return lower(url_part(u.get(), CURLUPART_SCHEME)) + "://" +
         lower(url_part(u.get(), CURLUPART_HOST)) + ":" +
         url_part(u.get(), CURLUPART_PORT, CURLU_DEFAULT_PORT);
}

// Resolves a Location header against the URL that returned it.
std::string resolve_url(const std::string& base, const std::string& ref) {
  std::unique_ptr<CURLU, CurluDeleter> u(curl_url());
  if (!u || curl_url_set(u.get(), CURLUPART_URL, base.c_str(), 0) != CURLUE_OK ||
      curl_url_set(u.get(), CURLUPART_URL, ref.c_str(), 0) != CURLUE_OK)
    throw Error("cannot resolve location \"" + ref + "\" against " + base, EINVAL);
  return url_part(u.get(), CURLUPART_URL);
}

std::string escape(const std::string& s) {
  char* e = curl_easy_escape(nullptr, s.c_str(), static_cast<int>(s.size()));
  std::string out = e ? e : "";
  curl_free(e);
  return out;
}

// Parameters of one "Bearer k=v,k=\"v\"" challenge.
std::map<std::string, std::string> challenge_params(std::string_view s) {
  std::map<std::string, std::string> out;
  size_t i = 0;
  while (i < s.size()) {
    while (i < s.size() && (s[i] == ' ' || s[i] == ',')) ++i;
    size_t eq = s.find('=', i);
    if (eq == std::string_view::npos) break;
    std::string key = lower(trim(s.substr(i, eq - i)));
    i = eq + 1;
    std::string val;
    if (i < s.size() && s[i] == '"') {
      for (++i; i < s.size() && s[i] != '"'; ++i) {
        if (s[i] == '\\' && i + 1 < s.size()) ++i;
        val.push_back(s[i]);
      }
      ++i;
    } else {
      size_t end = s.find(',', i);
      if (end == std::string_view::npos) end = s.size();
      val = trim(s.substr(i, end - i));
      i = end;
    }
    out[key] = val;
  }
  return out;
}

bool is_schema1(const std::string& media_type) {
  return media_type == "application/vnd.docker.distribution.manifest.v1+json" ||
         media_type == "application/vnd.docker.distribution.manifest.v1+prettyjws";
}

bool is_manifest_type(const std::string& t) {
  return t == "application/vnd.oci.image.index.v1+json" ||
         t == "application/vnd.oci.image.manifest.v1+json" ||
         t == "application/vnd.docker.distribution.manifest.list.v2+json" ||
         t == "application/vnd.docker.distribution.manifest.v2+json";
}

std::vector<std::string> dir_entries(const std::string& dir) {
  std::vector<std::string> out;
  if (DIR* d = ::opendir(dir.c_str())) {
    while (auto* e = ::readdir(d)) out.emplace_back(e->d_name);
    ::closedir(d);
  }
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace

// ---- the client ----------------------------------------------------------------------------

struct RegistryClient::Impl {
  Endpoint ep;
  Credentials creds;
  TransferPolicy policy;
  CURL* curl = nullptr;
  std::string scheme = "https";
  bool scheme_settled = false;
  std::string ca_bundle;  // system CAs + certs_dir/*.crt, when certs_dir has any
  std::string client_cert, client_key;

  enum class Scheme { unknown, basic, bearer } auth = Scheme::unknown;
  std::string realm, service;
  struct Token {
    std::string value;
    std::chrono::steady_clock::time_point expires;
  };
  std::map<std::string, Token> tokens;  // by scope

  Impl(Endpoint e, Credentials c) : ep(std::move(e)), creds(std::move(c)) {
    static std::once_flag once;
    std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
    curl = curl_easy_init();
    if (!curl) throw Error("registry " + ep.host + ": cannot initialise libcurl", ENOMEM);
    if (ep.host.empty() || ep.host.find_first_of("/ @?#") != std::string::npos)
      throw Error("invalid registry host \"" + ep.host + "\"", EINVAL);
    if (ep.insecure) ep.tls_verify = false;
    load_certs_dir();
  }
  ~Impl() { curl_easy_cleanup(curl); }

  void load_certs_dir() {
    if (ep.certs_dir.empty()) return;
    std::string extra;
    for (const auto& name : dir_entries(ep.certs_dir)) {
      std::string path = ep.certs_dir + "/" + name;
      if (name.ends_with(".crt")) {
        extra += read_file(path) + "\n";
      } else if (name.ends_with(".cert") && client_cert.empty()) {
        std::string key = path.substr(0, path.size() - 5) + ".key";
        if (!path_exists(key))
          throw Error("client certificate " + path + " has no matching " + key, ENOENT);
        client_cert = path;
        client_key = key;
      }
    }
    if (extra.empty()) return;
    char* sys = nullptr;
    curl_easy_getinfo(curl, CURLINFO_CAINFO, &sys);
    std::string sys_path = sys ? sys : "/etc/ssl/certs/ca-certificates.crt";
    ca_bundle = read_file_if_exists(sys_path).value_or("") + "\n" + extra;
  }

  std::string base() const { return scheme + "://" + ep.host; }
  std::string v2(const std::string& repo, const std::string& rest) const {
    return base() + "/v2/" + repo + "/" + rest;
  }

  // One HTTP exchange, no auth handling or redirects. Exceptions thrown by a sink are rethrown.
  Response perform_once(const Request& q, const std::string& url, const std::string& authz) {
    Response r;
    r.url = url;
    Transfer t{&q, &r, nullptr, 0};
    char errbuf[CURL_ERROR_SIZE] = "";
    curl_easy_reset(curl);  // keeps live connections, DNS and TLS session caches
    curl_easy_setopt(curl, CURLOPT_URL, url.c_str());
    curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(curl, CURLOPT_USERAGENT, "racker/" RACKER_VERSION);
    curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT,
                     static_cast<long>(policy.connect_timeout.count()));
    curl_easy_setopt(curl, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(curl, CURLOPT_LOW_SPEED_TIME, static_cast<long>(policy.stall_timeout.count()));
    curl_easy_setopt(curl, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(curl, CURLOPT_HEADERDATA, &t);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &t);
    if (!ep.tls_verify) {
      curl_easy_setopt(curl, CURLOPT_SSL_VERIFYPEER, 0L);
      curl_easy_setopt(curl, CURLOPT_SSL_VERIFYHOST, 0L);
    }
    curl_blob ca{ca_bundle.data(), ca_bundle.size(), CURL_BLOB_NOCOPY};
    if (!ca_bundle.empty()) curl_easy_setopt(curl, CURLOPT_CAINFO_BLOB, &ca);
    if (!client_cert.empty()) {
      curl_easy_setopt(curl, CURLOPT_SSLCERT, client_cert.c_str());
      curl_easy_setopt(curl, CURLOPT_SSLKEY, client_key.c_str());
    }

    curl_slist* hl = nullptr;
    for (const auto& h : q.headers) hl = curl_slist_append(hl, h.c_str());
    if (!authz.empty()) hl = curl_slist_append(hl, authz.c_str());
    hl = curl_slist_append(hl, "Expect:");
    std::unique_ptr<curl_slist, void (*)(curl_slist*)> guard(hl, curl_slist_free_all);
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, hl);

    if (q.method == "HEAD") {
      curl_easy_setopt(curl, CURLOPT_NOBODY, 1L);
    } else if (q.method == "POST" && !q.has_body) {
      curl_easy_setopt(curl, CURLOPT_POST, 1L);
      curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE, 0L);
      curl_easy_setopt(curl, CURLOPT_POSTFIELDS, "");
    } else if (q.method == "PUT" || q.method == "PATCH") {
      curl_easy_setopt(curl, CURLOPT_UPLOAD, 1L);
      uint64_t len = q.body_fd >= 0 ? q.body_len : q.body.size();
      curl_easy_setopt(curl, CURLOPT_INFILESIZE_LARGE, static_cast<curl_off_t>(len));
      curl_easy_setopt(curl, CURLOPT_READFUNCTION, on_read);
      curl_easy_setopt(curl, CURLOPT_READDATA, &t);
      if (q.method == "PATCH") curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, "PATCH");
    } else if (q.method != "GET") {
      throw Error("unsupported HTTP method " + q.method, EINVAL);
    }

    r.curl_code = curl_easy_perform(curl);
    if (t.error) std::rethrow_exception(t.error);
    if (r.curl_code != CURLE_OK && !(r.curl_code == CURLE_WRITE_ERROR && r.too_large)) {
      r.curl_error = errbuf[0] ? errbuf : curl_easy_strerror(r.curl_code);
      while (!r.curl_error.empty() && r.curl_error.back() == '\n') r.curl_error.pop_back();
      return r;
    }
    r.curl_code = CURLE_OK;
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &r.status);
    char* loc = nullptr;
    if (curl_easy_getinfo(curl, CURLINFO_REDIRECT_URL, &loc) == CURLE_OK && loc)
      r.redirect_url = loc;
    return r;
  }

  // ---- auth ----

  // "" for requests outside any repository (GET /v2/).
  std::string scope_of(const Request& q) const {
    return q.repository.empty() ? "" : "repository:" + q.repository + ":" + q.scope_actions;
  }

  std::string basic_header() const {
    return "Authorization: Basic " + base64_encode(creds.username + ":" + creds.password);
  }

  void fetch_token(const std::string& scope) {
    std::string url = realm + (realm.find('?') == std::string::npos ? "?" : "&");
    if (!service.empty()) url += "service=" + escape(service) + "&";
    if (!scope.empty()) url += "scope=" + escape(scope);
    if (url.back() == '&' || url.back() == '?') url.pop_back();
    Request q;
    q.max_body = kMaxTokenBody;
    std::string authz = creds.empty() ? "" : basic_header();
    Response r;
    for (int hops = 0;; ++hops) {
      r = perform_once(q, url, authz);
      if (r.curl_code == CURLE_OK && r.status >= 300 && r.status < 400 && !r.redirect_url.empty() &&
          hops < 5) {
        if (origin_of(r.redirect_url) != origin_of(url)) authz.clear();
        url = r.redirect_url;
        continue;
      }
      break;
    }
    if (r.curl_code != CURLE_OK || r.status != 200 || r.too_large)
      throw response_error("GET", r, !creds.empty());
    json j = json::parse(r.body, nullptr, false);
    std::string token;
    if (j.is_object()) {
      for (const char* k : {"token", "access_token"})
        if (auto v = j.find(k); v != j.end() && v->is_string() && !v->get<std::string>().empty()) {
          token = v->get<std::string>();
          break;
        }
    }
    if (token.empty())
      throw RegistryError("GET " + url + ": no token in the token server's answer", EACCES, 200, "",
                          false);
    int64_t ttl = 60;
    if (auto v = j.find("expires_in"); v != j.end() && v->is_number_integer())
      ttl = std::max<int64_t>(v->get<int64_t>(), 60);
    tokens[scope] = {token, std::chrono::steady_clock::now() + std::chrono::seconds(ttl - 10)};
  }

  // The Authorization header for a request to the registry itself ("" = none).
  std::string auth_header(const Request& q) {
    if (auth == Scheme::basic) return basic_header();
    if (auth != Scheme::bearer) return "";
    std::string scope = scope_of(q);
    auto it = tokens.find(scope);
    if (it == tokens.end() || it->second.expires <= std::chrono::steady_clock::now()) {
      fetch_token(scope);
      it = tokens.find(scope);
    }
    return "Authorization: Bearer " + it->second.value;
  }

  // After a 401: true when there is something new to try.
  bool answer_challenge(const Response& r, const Request& q) {
    std::string bearer, basic;
    for (const auto& [name, value] : r.headers) {
      if (name != "www-authenticate") continue;
      std::string l = lower(value);
      if (l.starts_with("bearer ")) bearer = value.substr(7);
      if (l.starts_with("basic")) basic = value;
    }
    if (!bearer.empty()) {
      auto params = challenge_params(bearer);
      if (params["realm"].empty()) return false;
      realm = params["realm"];
      service = params["service"];
      auth = Scheme::bearer;
      tokens.erase(scope_of(q));  // the token we sent (if any) was refused
      fetch_token(scope_of(q));
      return true;
    }
    if (!basic.empty() && !creds.empty() && auth != Scheme::basic) {
      auth = Scheme::basic;
      return true;
    }
    return false;
  }

  // One request with the auth dance, the http fallback of insecure registries, and redirects.
  Response send(const Request& q) {
    std::string url = q.url;
    bool challenged = false;
    for (int hops = 0;;) {
      bool to_registry = origin_of(url) == origin_of(base());
      std::string authz = to_registry ? auth_header(q) : "";
      Response r = perform_once(q, url, authz);
      if (r.curl_code != CURLE_OK && to_registry && ep.insecure && !scheme_settled &&
          scheme == "https" && r.status == 0) {
        // Insecure registries may speak plain http: try it once, and stick to what worked.
        scheme = "http";
        scheme_settled = true;
        url = "http" + url.substr(5);
        continue;
      }
      if (r.curl_code == CURLE_OK && to_registry) scheme_settled = true;
      if (r.curl_code != CURLE_OK) return r;
      if (r.status == 401 && to_registry && !challenged) {
        challenged = true;
        if (answer_challenge(r, q)) continue;
      }
      if (r.status >= 300 && r.status < 400 && !r.redirect_url.empty()) {
        if (++hops > 10)
          throw RegistryError(q.method + " " + q.url + ": too many redirects", EIO, r.status, "",
                              false);
        url = r.redirect_url;
        continue;
      }
      return r;
    }
  }

  bool sent_credentials() const { return auth == Scheme::basic; }

  [[noreturn]] void fail(const Request& q, const Response& r) {
    throw response_error(q.method, r, sent_credentials());
  }

  milliseconds backoff(int attempt, milliseconds hint) const {
    milliseconds d = policy.base_delay * (1 << std::min(attempt - 1, 16));
    if (hint.count() > 0) d = hint;
    return std::min(d, policy.max_delay);
  }

  // Runs fn, retrying it when it throws a transient RegistryError.
  template <typename Fn>
  auto retrying(Fn&& fn) {
    for (int attempt = 1;; ++attempt) {
      try {
        return fn();
      } catch (const RegistryError& e) {
        if (!e.transient() || attempt >= policy.max_tries) throw;
        std::this_thread::sleep_for(backoff(attempt, e.retry_after()));
      }
    }
  }

  // Sends q and throws unless the answer has one of the wanted statuses.
  Response expect(const Request& q, std::initializer_list<long> wanted) {
    Response r = send(q);
    if (r.curl_code != CURLE_OK ||
        std::find(wanted.begin(), wanted.end(), r.status) == wanted.end())
      fail(q, r);
    return r;
  }

  void check_pushed_digest(const Request& q, const Response& r, const std::string& digest) {
    std::string got = r.header("docker-content-digest");
    if (!got.empty() && got != digest)
      throw RegistryError(
          q.method + " " + r.url + ": registry stored " + got + ", expected " + digest, EIO,
          r.status, "", false);
  }
};

RegistryClient::RegistryClient(Endpoint ep, Credentials creds)
    : impl_(std::make_unique<Impl>(std::move(ep), std::move(creds))) {}
RegistryClient::~RegistryClient() = default;

void RegistryClient::set_policy(const TransferPolicy& p) {
  impl_->policy = p;
  if (impl_->policy.max_tries < 1) impl_->policy.max_tries = 1;
}

FetchedManifest RegistryClient::get_manifest(const std::string& repository,
                                             const std::string& reference) {
  validate_repository(repository);
  validate_reference(reference);
  Impl& c = *impl_;
  return c.retrying([&] {
    Request q;
    q.url = c.v2(repository, "manifests/" + reference);
    q.repository = repository;
    q.headers = {kManifestAccept};
    q.max_body = kMaxManifest;
    Response r = c.expect(q, {200});
    if (r.too_large)
      throw RegistryError("GET " + r.url + ": manifest larger than 4 MiB", EFBIG, 200, "", false);
    FetchedManifest m;
    m.body = std::move(r.body);
    m.digest = sha256_digest(m.body);
    m.media_type = trim(r.header("content-type").substr(0, r.header("content-type").find(';')));
    json j = json::parse(m.body, nullptr, false);
    if (!is_manifest_type(m.media_type) && !is_schema1(m.media_type)) {
      // Some registries answer application/json: trust the body's own mediaType then.
      std::string from_body = j.is_object() ? j.value("mediaType", "") : "";
      if (!from_body.empty()) {
        m.media_type = from_body;
      } else if (j.is_object() && j.value("schemaVersion", 0) == 2) {
        m.media_type = j.contains("manifests") ? "application/vnd.oci.image.index.v1+json"
                                               : "application/vnd.oci.image.manifest.v1+json";
      }
    }
    if (is_schema1(m.media_type) || (j.is_object() && j.value("schemaVersion", 0) == 1))
      throw RegistryError("GET " + r.url + ": schema1 manifests are not supported", ENOTSUP, 200,
                          "", false);
    if (!is_manifest_type(m.media_type))
      throw RegistryError(
          "GET " + r.url + ": unsupported manifest media type \"" + m.media_type + "\"", ENOTSUP,
          200, "", false);
    std::string claimed =
        reference.find(':') != std::string::npos ? reference : r.header("docker-content-digest");
    if (!claimed.empty() && claimed.starts_with("sha256:") && claimed != m.digest)
      throw RegistryError("GET " + r.url + ": digest mismatch for " + claimed + ": got " + m.digest,
                          EIO, 200, "", false);
    if (!claimed.empty() && !claimed.starts_with("sha256:") &&
        reference.find(':') != std::string::npos)
      throw RegistryError("GET " + r.url + ": cannot verify " + claimed + " (only sha256)", ENOTSUP,
                          200, "", false);
    return m;
  });
}

void RegistryClient::get_blob(const std::string& repository, const std::string& digest,
                              int64_t size, ContentStore::Ingest& into,
                              const std::function<void(const char*, size_t)>& on_data) {
  validate_repository(repository);
  validate_digest(digest);
  Impl& c = *impl_;
  uint64_t delivered = into.offset();  // on_data has (or the caller had) everything before this
  int failures = 0;
  uint64_t unsatisfiable_at = UINT64_MAX;  // where a Range request was answered 416
  for (int round = 1;; ++round) {
    uint64_t start = into.offset();
    if (size >= 0 && start == static_cast<uint64_t>(size)) return;
    Request q;
    q.url = c.v2(repository, "blobs/" + digest);
    q.repository = repository;
    if (start > 0) q.headers.push_back("Range: bytes=" + std::to_string(start) + "-");
    bool first = true, bad_range = false;
    q.sink = [&](const Response& r, const char* p, size_t n) {
      if (first) {
        first = false;
        if (start > 0 && r.status == 200) into.reset();  // the server ignored our Range
        if (start > 0 && r.status == 206) {
          // "bytes <first>-<last>/<total>": it must start where we asked.
          std::string cr = r.header("content-range");
          auto dash = cr.find('-');
          auto from = cr.starts_with("bytes ") && dash != std::string::npos
                          ? parse_uint(std::string_view(cr).substr(6, dash - 6))
                          : std::nullopt;
          if (from != start) {
            bad_range = true;
            return false;
          }
        }
      }
      uint64_t at = into.offset();
      into.write(p, n);
      if (on_data && at + n > delivered) {
        size_t skip = at < delivered ? static_cast<size_t>(delivered - at) : 0;
        on_data(p + skip, n - skip);
        delivered = at + n;
      }
      return true;
    };
    std::optional<RegistryError> err;
    Response r;
    try {
      r = c.send(q);
    } catch (const RegistryError& e) {  // e.g. the token server failed
      if (!e.transient()) throw;
      err.emplace(e);
    }
    bool progress = into.offset() > start;
    bool ok = !err && r.curl_code == CURLE_OK && (r.status == 200 || r.status == 206);
    if (ok && (size < 0 || into.offset() == static_cast<uint64_t>(size))) return;

    // a 416 body may itself be cut short (curl then reports an error): the status decides
    if (!err && r.status == 416 && start > 0 && start == unsatisfiable_at)
      throw RegistryError("GET " + r.url + ": the registry has only " + std::to_string(start) +
                              " of the blob's " + std::to_string(size) + " bytes",
                          EIO, r.status, "", false);
    if (!err && (bad_range || (r.status == 416 && start > 0))) {
      if (r.status == 416) unsatisfiable_at = start;
      into.reset();  // the server cannot resume this blob: start over, now
      err.emplace(
          "GET " + r.url + ": server did not honour Range: bytes=" + std::to_string(start) + "-",
          EIO, r.status, "", true);
    } else if (!err && ok) {
      err.emplace("GET " + r.url + ": connection closed after " + std::to_string(into.offset()) +
                      " of " + std::to_string(size) + " bytes",
                  ECONNRESET, r.status, "", true);
    } else if (!err) {
      err.emplace(response_error(q.method, r, c.sent_credentials()));
    }
    if (!err->transient()) throw *err;
    failures = progress ? 1 : failures + 1;
    if (failures >= c.policy.max_tries || round >= 10 * c.policy.max_tries)
      throw RegistryError(
          std::string(err->what()) + " (gave up after " + std::to_string(round) + " tries)",
          err->err(), err->http_status(), err->registry_code(), false);
    std::this_thread::sleep_for(c.backoff(failures, err->retry_after()));
  }
}

void RegistryClient::check_login() {
  Impl& c = *impl_;
  c.retrying([&] {
    Request q;
    q.url = c.base() + "/v2/";
    c.expect(q, {200});
  });
}

bool RegistryClient::blob_exists(const std::string& repository, const std::string& digest) {
  validate_repository(repository);
  validate_digest(digest);
  Impl& c = *impl_;
  return c.retrying([&] {
    Request q;
    q.method = "HEAD";
    q.url = c.v2(repository, "blobs/" + digest);
    q.repository = repository;
    return c.expect(q, {200, 404}).status == 200;
  });
}

void RegistryClient::put_blob(const std::string& repository, const std::string& digest,
                              const std::string& path) {
  validate_repository(repository);
  validate_digest(digest);
  Impl& c = *impl_;
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) throw_errno("open " + path);
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) throw_errno("stat " + path);
  uint64_t size = static_cast<uint64_t>(st.st_size);
  c.retrying([&] {
    Request start;
    start.method = "POST";
    start.url = c.v2(repository, "blobs/uploads/");
    start.repository = repository;
    start.scope_actions = "pull,push";
    Response r = c.expect(start, {202});
    std::string location = r.header("location");
    if (location.empty())
      throw RegistryError("POST " + r.url + ": no Location in the answer", EIO, 202, "", false);
    location = resolve_url(r.url, location);

    Request put;
    put.method = "PUT";
    put.repository = repository;
    put.scope_actions = "pull,push";
    put.has_body = true;
    put.body_fd = fd.get();
    put.headers = {"Content-Type: application/octet-stream"};
    uint64_t chunk = c.policy.upload_chunk_size;
    if (chunk > 0 && size > chunk) {
      for (uint64_t off = 0; off < size; off += chunk) {
        Request patch = put;
        patch.method = "PATCH";
        patch.url = location;
        patch.body_offset = off;
        patch.body_len = std::min(chunk, size - off);
        patch.headers.push_back("Content-Range: " + std::to_string(off) + "-" +
                                std::to_string(off + patch.body_len - 1));
        Response pr = c.expect(patch, {202});
        if (auto l = pr.header("location"); !l.empty()) location = resolve_url(pr.url, l);
      }
      put.body_len = 0;
      put.body_fd = -1;
    } else {
      put.body_len = size;
    }
    put.url = location + (location.find('?') == std::string::npos ? "?" : "&") +
              "digest=" + escape(digest);
    Response done = c.expect(put, {201});
    c.check_pushed_digest(put, done, digest);
  });
}

void RegistryClient::put_manifest(const std::string& repository, const std::string& reference,
                                  const std::string& media_type, const std::string& body) {
  validate_repository(repository);
  validate_reference(reference);
  std::string digest = sha256_digest(body);
  if (reference.find(':') != std::string::npos && reference != digest)
    throw Error("put manifest " + repository + "@" + reference + ": body hashes to " + digest,
                EINVAL);
  Impl& c = *impl_;
  c.retrying([&] {
    Request q;
    q.method = "PUT";
    q.url = c.v2(repository, "manifests/" + reference);
    q.repository = repository;
    q.scope_actions = "pull,push";
    q.has_body = true;
    q.body = body;
    q.headers = {"Content-Type: " + media_type};
    Response r = c.expect(q, {201});
    c.check_pushed_digest(q, r, digest);
  });
}

}  // namespace racker::image
