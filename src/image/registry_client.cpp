#include "image/registry_client.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string_view>
#include <thread>
#include <vector>

#include "base/fd.hpp"
#include "base/fs.hpp"
#include "base/strings.hpp"
#include "image/digest.hpp"
#include "image/http.hpp"

namespace racker::image {

namespace {

using nlohmann::json;
using std::chrono::milliseconds;

constexpr size_t kMaxManifest = 4 << 20;  // as containers/image
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

// ---- requests ----------------------------------------------------------------------------

using http::Response;

// An HTTP request plus what the auth dance needs to pick a token.
struct Request : http::Request {
  std::string scope_actions = "pull";
  std::string repository;  // "" for requests outside any repository (GET /v2/)
};

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

milliseconds retry_after(const Response& r) {
  auto secs = parse_uint(r.header("retry-after"));
  return secs ? milliseconds(std::min<uint64_t>(*secs, 3600) * 1000) : milliseconds(0);
}

// "GET url: 404 MANIFEST_UNKNOWN: manifest unknown", "GET url: 401 unauthorized: ...".
RegistryError response_error(const std::string& method, const Response& r,
                             bool sent_credentials = false) {
  std::string what = method + " " + r.url + ": ";
  if (r.failure) {
    std::string msg = r.failure->message;
    // "Failed to connect ..." -> "failed to connect ...", but "SSL ..." stays.
    if (msg.size() > 1 && std::islower(static_cast<unsigned char>(msg[1])))
      msg[0] = static_cast<char>(std::tolower(static_cast<unsigned char>(msg[0])));
    return RegistryError(what + msg, r.failure->err, 0, "", r.failure->transient);
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
  http::Session session;  // loads libcurl
  std::string scheme = "https";
  bool scheme_settled = false;

  enum class Scheme { unknown, basic, bearer } auth = Scheme::unknown;
  std::string realm, service;
  struct Token {
    std::string value;
    std::chrono::steady_clock::time_point expires;
  };
  std::map<std::string, Token> tokens;  // by scope

  Impl(Endpoint e, Credentials c) : ep(std::move(e)), creds(std::move(c)) {
    if (ep.host.empty() || ep.host.find_first_of("/ @?#") != std::string::npos)
      throw Error("invalid registry host \"" + ep.host + "\"", EINVAL);
    if (ep.insecure) ep.tls_verify = false;
    session.options.tls_verify = ep.tls_verify;
    load_certs_dir();
  }

  void load_certs_dir() {
    if (ep.certs_dir.empty()) return;
    std::string extra, client_cert, client_key;
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
    session.options.client_cert = client_cert;
    session.options.client_key = client_key;
    if (extra.empty()) return;
    // system CAs + certs_dir/*.crt
    std::string sys_path = session.default_ca_file();
    if (sys_path.empty()) sys_path = "/etc/ssl/certs/ca-certificates.crt";
    session.options.ca_bundle = read_file_if_exists(sys_path).value_or("") + "\n" + extra;
  }

  std::string base() const { return scheme + "://" + ep.host; }
  std::string v2(const std::string& repo, const std::string& rest) const {
    return base() + "/v2/" + repo + "/" + rest;
  }

  // One HTTP exchange, no auth handling or redirects. Exceptions thrown by a sink are rethrown.
  Response perform_once(const Request& q, const std::string& url, const std::string& authz) {
    session.options.connect_timeout = policy.connect_timeout;
    session.options.stall_timeout = policy.stall_timeout;
    return session.perform(q, url, authz);
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
    if (!service.empty()) url += "service=" + http::escape(service) + "&";
    if (!scope.empty()) url += "scope=" + http::escape(scope);
    if (url.back() == '&' || url.back() == '?') url.pop_back();
    Request q;
    q.max_body = kMaxTokenBody;
    std::string authz = creds.empty() ? "" : basic_header();
    Response r;
    for (int hops = 0;; ++hops) {
      r = perform_once(q, url, authz);
      if (r.transport_ok() && r.status >= 300 && r.status < 400 && !r.redirect_url.empty() &&
          hops < 5) {
        if (http::origin_of(r.redirect_url) != http::origin_of(url)) authz.clear();
        url = r.redirect_url;
        continue;
      }
      break;
    }
    if (!r.transport_ok() || r.status != 200 || r.too_large)
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
      bool to_registry = http::origin_of(url) == http::origin_of(base());
      std::string authz = to_registry ? auth_header(q) : "";
      Response r = perform_once(q, url, authz);
      if (!r.transport_ok() && to_registry && ep.insecure && !scheme_settled && scheme == "https" &&
          r.status == 0) {
        // Insecure registries may speak plain http: try it once, and stick to what worked.
        scheme = "http";
        scheme_settled = true;
        url = "http" + url.substr(5);
        continue;
      }
      if (r.transport_ok() && to_registry) scheme_settled = true;
      if (!r.transport_ok()) return r;
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
    if (!r.transport_ok() || std::find(wanted.begin(), wanted.end(), r.status) == wanted.end())
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
    bool ok = !err && r.transport_ok() && (r.status == 200 || r.status == 206);
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
    location = http::resolve_url(r.url, location);

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
        if (auto l = pr.header("location"); !l.empty()) location = http::resolve_url(pr.url, l);
      }
      put.body_len = 0;
      put.body_fd = -1;
    } else {
      put.body_len = size;
    }
    put.url = location + (location.find('?') == std::string::npos ? "?" : "&") +
              "digest=" + http::escape(digest);
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
