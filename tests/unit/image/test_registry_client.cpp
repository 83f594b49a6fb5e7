// The registry client against a real docker-registry (push, pull, errors, Basic auth) and
// against a scripted in-process HTTP server (retries, Range resume, redirects, Bearer tokens).
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <map>
#include <mutex>
#include <thread>

#include "base/error.hpp"
#include "base/fd.hpp"
#include "base/fs.hpp"
#include "image/content_store.hpp"
#include "image/digest.hpp"
#include "image/registry_client.hpp"
#include "test_support.hpp"

using namespace racker;
using namespace racker::image;
using racker::test::error_of;

namespace {

const char* kRegistry = "/usr/bin/docker-registry";
const char* kHtpasswd = "/usr/bin/htpasswd";
const char* kOpenssl = "/usr/bin/openssl";

std::string pattern(size_t n, unsigned seed) {
  std::string s(n, '\0');
  uint32_t x = seed * 2654435761u + 1;
  for (auto& c : s) {
    x = x * 1103515245u + 12345u;
    c = static_cast<char>(x >> 24);
  }
  return s;
}

// Binds the socket fd to 127.0.0.1 on a port the kernel picks, and returns that port.
int bind_loopback(int fd) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) throw_errno("bind");
  socklen_t len = sizeof a;
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  return ntohs(a.sin_port);
}

int free_port() {
  UniqueFd fd(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  return bind_loopback(fd.get());
}

bool port_open(int port) {
  UniqueFd fd(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return connect(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
}

// Runs argv with stdout captured (stderr to /dev/null); returns stdout.
std::string run_capture(const std::vector<std::string>& argv) {
  int p[2];
  if (pipe2(p, O_CLOEXEC) != 0) throw_errno("pipe");
  pid_t pid = fork();
  if (pid == 0) {
    dup2(p[1], 1);
    int null = open("/dev/null", O_WRONLY);
    dup2(null, 2);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    execv(args[0], args.data());
    _exit(127);
  }
  close(p[1]);
  std::string out;
  char buf[4096];
  ssize_t n;
  while ((n = read(p[0], buf, sizeof buf)) > 0) out.append(buf, static_cast<size_t>(n));
  close(p[0]);
  int st = 0;
  waitpid(pid, &st, 0);
  if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) throw Error(argv[0] + " failed");
  return out;
}

// A docker-registry child process on 127.0.0.1:<free port>, killed with us at the latest.
struct LocalRegistry {
  std::optional<test::TempDir> tmp;
  std::string dir;
  int port = 0;
  pid_t pid = -1;

  // tls: a directory with server.crt/server.key to serve https with.
  void start(const std::string& htpasswd_line = "", const std::string& tls = "") {
    dir = tmp.emplace("racker-reg").path();
    port = free_port();
    std::string cfg =
        "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n"
        "storage:\n  filesystem:\n    rootdirectory: " +
        dir + "/storage\n  delete:\n    enabled: true\n" +
        "http:\n  addr: 127.0.0.1:" + std::to_string(port) + "\n  secret: racker-unit-test\n";
    if (!tls.empty())
      cfg += "  tls:\n    certificate: " + tls + "/server.crt\n    key: " + tls + "/server.key\n";
    if (!htpasswd_line.empty()) {
      write_file_atomic(dir + "/htpasswd", htpasswd_line);
      cfg += "auth:\n  htpasswd:\n    realm: racker-test\n    path: " + dir + "/htpasswd\n";
    }
    write_file_atomic(dir + "/config.yml", cfg);
    std::string log = dir + "/log";
    std::string config = dir + "/config.yml";
    pid = fork();
    if (pid < 0) throw_errno("fork");
    if (pid == 0) {
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      dup2(fd, 1);
      dup2(fd, 2);
      execl(kRegistry, kRegistry, "serve", config.c_str(), static_cast<char*>(nullptr));
      _exit(127);
    }
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (!port_open(port)) {
      int st;
      if (waitpid(pid, &st, WNOHANG) == pid) {
        pid = -1;
        throw Error("docker-registry exited: " + read_file_if_exists(log).value_or(""));
      }
      if (std::chrono::steady_clock::now() > deadline) throw Error("docker-registry not ready");
      usleep(10000);
    }
  }

  void stop() {
    if (pid > 0) {
      kill(pid, SIGKILL);
      waitpid(pid, nullptr, 0);
      pid = -1;
    }
    tmp.reset();
    dir.clear();
  }

  std::string host() const { return "127.0.0.1:" + std::to_string(port); }
  std::string url() const { return "http://" + host(); }
  std::string blob_data_path(const std::string& digest) const {
    std::string hex = digest.substr(7);
    return dir + "/storage/docker/registry/v2/blobs/sha256/" + hex.substr(0, 2) + "/" + hex +
           "/data";
  }
};

// An image made of a config and one layer, as files to push.
struct TestImage {
  std::string layer, config, manifest;
  std::string layer_digest, config_digest, manifest_digest;
  std::string layer_path, config_path;

  TestImage(const std::string& dir, size_t layer_size, unsigned seed) {
    layer = pattern(layer_size, seed);
    layer_digest = sha256_digest(layer);
    config = R"({"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[")" +
             layer_digest + R"("]}})";
    config_digest = sha256_digest(config);
    manifest = R"({"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",)"
               R"("config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":")" +
               config_digest + R"(","size":)" + std::to_string(config.size()) +
               R"(},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":")" +
               layer_digest + R"(","size":)" + std::to_string(layer.size()) + "}]}";
    manifest_digest = sha256_digest(manifest);
    layer_path = dir + "/layer-" + std::to_string(seed);
    config_path = dir + "/config-" + std::to_string(seed);
    write_file_atomic(layer_path, layer);
    write_file_atomic(config_path, config);
  }

  void push(RegistryClient& c, const std::string& repo, const std::string& tag) const {
    c.put_blob(repo, layer_digest, layer_path);
    c.put_blob(repo, config_digest, config_path);
    c.put_manifest(repo, tag, "application/vnd.oci.image.manifest.v1+json", manifest);
  }
};

Endpoint insecure(const std::string& host) {
  return Endpoint{.host = host, .insecure = true, .tls_verify = false, .certs_dir = ""};
}

TransferPolicy fast_policy() {
  TransferPolicy p;
  p.base_delay = std::chrono::milliseconds(1);
  p.max_delay = std::chrono::milliseconds(20);
  p.stall_timeout = std::chrono::seconds(5);
  return p;
}

// Downloads a blob into a fresh store and commits it; returns what on_data saw.
std::string pull_blob(RegistryClient& c, ContentStore& cs, const std::string& repo,
                      const std::string& digest, int64_t size) {
  auto in = cs.begin_ingest(digest, size);
  if (!in) return "";
  std::string seen;
  c.get_blob(repo, digest, size, *in, [&](const char* p, size_t n) { seen.append(p, n); });
  in->commit();
  return seen;
}

}  // namespace

// ---- against docker-registry ---------------------------------------------------------------

class RealRegistry : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (access(kRegistry, X_OK) != 0) return;
    open_.start();
    if (access(kHtpasswd, X_OK) == 0)
      authed_.start(run_capture({kHtpasswd, "-Bbn", "user", "pass"}));
    if (access(kOpenssl, X_OK) == 0) {
      const std::string& dir = tls_dir_.emplace("racker-reg").path();
      run_capture({kOpenssl, "req", "-x509", "-newkey", "ec", "-pkeyopt",
                   "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
                   "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", dir + "/server.key", "-out",
                   dir + "/server.crt"});
      tls_.start("", dir);
    }
  }
  static void TearDownTestSuite() {
    open_.stop();
    authed_.stop();
    tls_.stop();
    tls_dir_.reset();
  }
  void SetUp() override {
    if (access(kRegistry, X_OK) != 0) GTEST_SKIP() << kRegistry << " is not installed";
  }
  static LocalRegistry open_, authed_, tls_;
  static std::optional<test::TempDir> tls_dir_;
  test::TempDir tmp_{"racker-reg"};
  const std::string dir_ = tmp_.path();
};
LocalRegistry RealRegistry::open_, RealRegistry::authed_, RealRegistry::tls_;
std::optional<test::TempDir> RealRegistry::tls_dir_;

TEST_F(RealRegistry, PushThenPullManifestAndBlobs) {
  RegistryClient c(insecure(open_.host()), {});
  c.set_policy(fast_policy());
  TestImage img(dir_, 300000, 1);
  EXPECT_FALSE(c.blob_exists("test/app", img.layer_digest));
  img.push(c, "test/app", "v1");
  EXPECT_TRUE(c.blob_exists("test/app", img.layer_digest));
  EXPECT_TRUE(c.blob_exists("test/app", img.config_digest));

  FetchedManifest m = c.get_manifest("test/app", "v1");
  EXPECT_EQ(m.media_type, "application/vnd.oci.image.manifest.v1+json");
  EXPECT_EQ(m.body, img.manifest);
  EXPECT_EQ(m.digest, img.manifest_digest);
  FetchedManifest by_digest = c.get_manifest("test/app", img.manifest_digest);
  EXPECT_EQ(by_digest.body, img.manifest);

  ContentStore cs(dir_ + "/store");
  EXPECT_EQ(pull_blob(c, cs, "test/app", img.layer_digest, img.layer.size()), img.layer);
  EXPECT_EQ(read_file(cs.blob_path(img.layer_digest)), img.layer);
  pull_blob(c, cs, "test/app", img.config_digest, -1);  // size unknown
  EXPECT_EQ(cs.read_blob(img.config_digest), img.config);
}

TEST_F(RealRegistry, ChunkedUploadAndRangeResume) {
  RegistryClient c(insecure(open_.host()), {});
  TransferPolicy p = fast_policy();
  p.upload_chunk_size = 64 << 10;  // 4 PATCHes and a PUT
  c.set_policy(p);
  TestImage img(dir_, 200000, 2);
  img.push(c, "test/chunked", "latest");
  EXPECT_TRUE(c.blob_exists("test/chunked", img.layer_digest));

  ContentStore cs(dir_ + "/store");
  auto in = cs.begin_ingest(img.layer_digest, img.layer.size());
  ASSERT_TRUE(in);
  in->write(img.layer.data(), 123456);  // as if an earlier pull had died here
  std::string seen;
  c.get_blob("test/chunked", img.layer_digest, img.layer.size(), *in,
             [&](const char* d, size_t n) { seen.append(d, n); });
  EXPECT_EQ(seen, img.layer.substr(123456));  // the registry honoured our Range
  in->commit();
  EXPECT_EQ(read_file(cs.blob_path(img.layer_digest)), img.layer);
}

TEST_F(RealRegistry, RegistryErrorsAreOneLine) {
  RegistryClient c(insecure(open_.host()), {});
  c.set_policy(fast_policy());
  EXPECT_EQ(error_of([&] { c.get_manifest("test/app", "nope"); }),
            "GET " + open_.url() +
                "/v2/test/app/manifests/nope: 404 MANIFEST_UNKNOWN: manifest "
                "unknown");
  std::string missing = sha256_digest("missing");
  ContentStore cs(dir_ + "/store");
  auto in = cs.begin_ingest(missing, 7);
  EXPECT_EQ(error_of([&] { c.get_blob("test/app", missing, 7, *in, {}); }),
            "GET " + open_.url() + "/v2/test/app/blobs/" + missing +
                ": 404 BLOB_UNKNOWN: blob unknown to registry");
  EXPECT_EQ(error_of([&] { c.get_manifest("Bad/Name", "x"); }),
            "invalid repository name \"Bad/Name\"");
  EXPECT_EQ(
      error_of([&] { c.put_manifest("test/app", sha256_digest("a"), "x", "b"); }),
      "put manifest test/app@" + sha256_digest("a") + ": body hashes to " + sha256_digest("b"));
  RegistryClient nobody(insecure("127.0.0.1:" + std::to_string(free_port())), {});
  TransferPolicy once = fast_policy();
  once.max_tries = 1;
  nobody.set_policy(once);
  std::string e = error_of([&] { nobody.get_manifest("x", "y"); });
  EXPECT_NE(e.find("GET http://127.0.0.1:"), std::string::npos) << e;
  EXPECT_NE(e.find("connect"), std::string::npos) << e;
}

TEST_F(RealRegistry, LyingRegistryIsCaughtAndNothingIsStored) {
  RegistryClient c(insecure(open_.host()), {});
  c.set_policy(fast_policy());
  TestImage img(dir_, 50000, 3);
  img.push(c, "test/liar", "v1");
  std::string evil = pattern(img.layer.size(), 99);
  ::unlink(open_.blob_data_path(img.layer_digest).c_str());
  write_file_atomic(open_.blob_data_path(img.layer_digest), evil);

  ContentStore cs(dir_ + "/store");
  auto in = cs.begin_ingest(img.layer_digest, img.layer.size());
  c.get_blob("test/liar", img.layer_digest, img.layer.size(), *in, {});
  EXPECT_EQ(error_of([&] { in->commit(); }),
            "digest mismatch for " + img.layer_digest + ": got " + sha256_digest(evil));
  EXPECT_FALSE(cs.has(img.layer_digest));
  EXPECT_TRUE(cs.list_blobs().empty());
}

TEST_F(RealRegistry, BasicAuth) {
  if (authed_.pid <= 0) GTEST_SKIP() << kHtpasswd << " is not installed";
  RegistryClient anonymous(insecure(authed_.host()), {});
  anonymous.set_policy(fast_policy());
  EXPECT_EQ(error_of([&] { anonymous.get_manifest("test/app", "latest"); }),
            "GET " + authed_.url() +
                "/v2/test/app/manifests/latest: 401 unauthorized: authentication required");
  EXPECT_EQ(error_of([&] { anonymous.blob_exists("test/app", sha256_digest("x")); }),
            "HEAD " + authed_.url() + "/v2/test/app/blobs/" + sha256_digest("x") +
                ": 401 unauthorized: authentication required");

  RegistryClient wrong(insecure(authed_.host()), {"user", "wrong"});
  wrong.set_policy(fast_policy());
  EXPECT_EQ(error_of([&] { wrong.get_manifest("test/app", "latest"); }),
            "GET " + authed_.url() +
                "/v2/test/app/manifests/latest: 401 unauthorized: invalid username or password");

  RegistryClient c(insecure(authed_.host()), {"user", "pass"});
  c.set_policy(fast_policy());
  TestImage img(dir_, 10000, 4);
  img.push(c, "test/app", "latest");
  EXPECT_EQ(c.get_manifest("test/app", "latest").digest, img.manifest_digest);
  ContentStore cs(dir_ + "/store");
  EXPECT_EQ(pull_blob(c, cs, "test/app", img.layer_digest, img.layer.size()), img.layer);
}

TEST_F(RealRegistry, TlsVerificationAndCertsDir) {
  if (tls_.pid <= 0) GTEST_SKIP() << kOpenssl << " is not installed";
  std::string url = "https://" + tls_.host() + "/v2/test/app/manifests/x";
  RegistryClient strict(
      Endpoint{.host = tls_.host(), .insecure = false, .tls_verify = true, .certs_dir = ""}, {});
  strict.set_policy(fast_policy());
  EXPECT_EQ(error_of([&] { strict.get_manifest("test/app", "x"); }),
            "GET " + url + ": SSL certificate problem: self-signed certificate");

  // certs.d/<host>/ca.crt makes it trusted (on top of the system CAs).
  mkdir_p(dir_ + "/certs.d");
  write_file_atomic(dir_ + "/certs.d/ca.crt", read_file(tls_dir_->path() + "/server.crt"));
  RegistryClient trusted(Endpoint{.host = tls_.host(),
                                  .insecure = false,
                                  .tls_verify = true,
                                  .certs_dir = dir_ + "/certs.d"},
                         {});
  trusted.set_policy(fast_policy());
  TestImage img(dir_, 5000, 5);
  img.push(trusted, "test/app", "v1");
  EXPECT_EQ(trusted.get_manifest("test/app", "v1").digest, img.manifest_digest);
  EXPECT_EQ(error_of([&] { trusted.get_manifest("test/app", "x"); }),
            "GET " + url + ": 404 MANIFEST_UNKNOWN: manifest unknown");

  // Insecure registries still speak https when they can.
  RegistryClient unverified(insecure(tls_.host()), {});
  unverified.set_policy(fast_policy());
  EXPECT_EQ(error_of([&] { unverified.get_manifest("test/app", "x"); }),
            "GET " + url + ": 404 MANIFEST_UNKNOWN: manifest unknown");
}

// ---- against a scripted HTTP server --------------------------------------------------------

namespace {

struct HttpRequest {
  std::string method, target;
  std::map<std::string, std::string> headers;  // lower-case names
};

// Answers each connection with handler(request) verbatim, then closes it.
class ScriptedServer {
 public:
  using Handler = std::function<std::string(const HttpRequest&)>;
  explicit ScriptedServer(Handler h) : handler_(std::move(h)) {
    fd_.reset(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    port_ = bind_loopback(fd_.get());
    listen(fd_.get(), 16);
    thread_ = std::thread([this] { loop(); });
  }
  ~ScriptedServer() {
    stop_ = true;
    thread_.join();
  }
  std::string host() const { return "127.0.0.1:" + std::to_string(port_); }
  std::vector<HttpRequest> requests() {
    std::lock_guard l(mu_);
    return log_;
  }

 private:
  void loop() {
    while (!stop_) {
      pollfd p{fd_.get(), POLLIN, 0};
      if (poll(&p, 1, 20) <= 0) continue;
      UniqueFd conn(accept4(fd_.get(), nullptr, nullptr, SOCK_CLOEXEC));
      if (!conn) continue;
      std::string in;
      char buf[4096];
      while (in.find("\r\n\r\n") == std::string::npos) {
        pollfd q{conn.get(), POLLIN, 0};
        if (poll(&q, 1, 2000) <= 0) break;
        ssize_t n = read(conn.get(), buf, sizeof buf);
        if (n <= 0) break;
        in.append(buf, static_cast<size_t>(n));
        if (static_cast<unsigned char>(in[0]) == 0x16) break;  // a TLS hello: not for us
      }
      if (in.empty() || static_cast<unsigned char>(in[0]) == 0x16 ||
          in.find("\r\n\r\n") == std::string::npos) {
        std::string no = "HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n";
        write_all(conn.get(), no.data(), no.size());
        continue;
      }
      HttpRequest r;
      std::string head = in.substr(0, in.find("\r\n\r\n"));
      size_t eol = head.find("\r\n");
      std::string first = head.substr(0, eol);
      r.method = first.substr(0, first.find(' '));
      r.target = first.substr(first.find(' ') + 1);
      r.target = r.target.substr(0, r.target.rfind(' '));
      while (eol != std::string::npos) {
        size_t next = head.find("\r\n", eol + 2);
        std::string line = head.substr(eol + 2, next == std::string::npos ? next : next - eol - 2);
        if (auto c = line.find(':'); c != std::string::npos) {
          std::string name = line.substr(0, c);
          for (auto& ch : name) ch = static_cast<char>(tolower(ch));
          r.headers[name] = line.substr(line.find_first_not_of(' ', c + 1));
        }
        eol = next;
      }
      {
        std::lock_guard l(mu_);
        log_.push_back(r);
      }
      std::string out = handler_(r);
      write_all(conn.get(), out.data(), out.size());
    }
  }

  Handler handler_;
  UniqueFd fd_;
  int port_ = 0;
  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::mutex mu_;
  std::vector<HttpRequest> log_;
};

std::string response(int status, const std::string& reason, const std::vector<std::string>& headers,
                     const std::string& body, size_t claimed_length = std::string::npos) {
  std::string out = "HTTP/1.1 " + std::to_string(status) + " " + reason + "\r\n";
  for (const auto& h : headers) out += h + "\r\n";
  out += "Content-Length: " +
         std::to_string(claimed_length == std::string::npos ? body.size() : claimed_length) +
         "\r\nConnection: close\r\n\r\n" + body;
  return out;
}

}  // namespace

TEST(ScriptedRegistry, RetriesAndResumesAfterResetsAnd503) {
  std::string blob = pattern(100000, 7);
  std::string digest = sha256_digest(blob);
  std::atomic<int> n{0};
  ScriptedServer s([&](const HttpRequest& r) {
    switch (n++) {
      case 0:  // the connection dies after 40000 bytes
        return response(200, "OK", {}, blob.substr(0, 40000), blob.size());
      case 1:
        return response(503, "Service Unavailable", {"Retry-After: 0"}, "busy");
      default: {
        auto range = r.headers.count("range") ? r.headers.at("range") : "";
        size_t from = range.empty() ? 0 : std::stoul(range.substr(6));
        return response(206, "Partial Content",
                        {"Content-Range: bytes " + std::to_string(from) + "-" +
                         std::to_string(blob.size() - 1) + "/" + std::to_string(blob.size())},
                        blob.substr(from));
      }
    }
  });
  test::TempDir tmp("racker-reg");
  ContentStore cs(tmp.path());
  RegistryClient c(insecure(s.host()), {});
  c.set_policy(fast_policy());
  EXPECT_EQ(pull_blob(c, cs, "lib/x", digest, blob.size()), blob);  // each byte seen once
  EXPECT_TRUE(cs.has(digest));
  auto reqs = s.requests();
  ASSERT_EQ(reqs.size(), 3u);
  EXPECT_EQ(reqs[0].headers.count("range"), 0u);
  EXPECT_EQ(reqs[1].headers["range"], "bytes=40000-");
  EXPECT_EQ(reqs[2].headers["range"], "bytes=40000-");
  EXPECT_EQ(reqs[2].target, "/v2/lib/x/blobs/" + digest);
}

TEST(ScriptedRegistry, ServerIgnoringRangeRestartsTheIngest) {
  std::string blob = pattern(50000, 8);
  std::string digest = sha256_digest(blob);
  ScriptedServer s([&](const HttpRequest&) { return response(200, "OK", {}, blob); });
  test::TempDir tmp("racker-reg");
  ContentStore cs(tmp.path());
  auto in = cs.begin_ingest(digest, blob.size());
  in->write(blob.data(), 1000);
  RegistryClient c(insecure(s.host()), {});
  c.set_policy(fast_policy());
  std::string seen;
  c.get_blob("lib/x", digest, blob.size(), *in,
             [&](const char* p, size_t n) { seen.append(p, n); });
  EXPECT_EQ(seen, blob.substr(1000));  // the re-sent prefix is not handed out twice
  EXPECT_EQ(s.requests().at(0).headers["range"], "bytes=1000-");
  in->commit();
  EXPECT_EQ(read_file(cs.blob_path(digest)), blob);
}

TEST(ScriptedRegistry, PersistentFailureGivesUpWithTheLastError) {
  std::atomic<int> n{0};
  ScriptedServer s([&](const HttpRequest&) {
    ++n;
    return response(500, "Internal Server Error", {"Content-Type: application/json"},
                    R"({"errors":[{"code":"UNKNOWN","message":"unknown error"}]})");
  });
  RegistryClient c(insecure(s.host()), {});
  c.set_policy(fast_policy());
  EXPECT_EQ(error_of([&] { c.get_manifest("lib/x", "1"); }),
            "GET http://" + s.host() + "/v2/lib/x/manifests/1: 500 UNKNOWN: unknown error");
  EXPECT_EQ(n.load(), 5);
}

TEST(ScriptedRegistry, BearerTokenAndRedirectWithoutAuthorization) {
  std::string blob = "layer bytes";
  std::string digest = sha256_digest(blob);
  ScriptedServer storage([&](const HttpRequest&) { return response(200, "OK", {}, blob); });
  ScriptedServer tokens([&](const HttpRequest& r) {
    bool ok =
        r.headers.count("authorization") && r.headers.at("authorization") == "Basic dXNlcjpwYXNz";
    return ok ? response(200, "OK", {}, R"({"access_token":"t0k3n","expires_in":300})")
              : response(401, "Unauthorized", {},
                         R"({"details":"incorrect username or password"})");
  });
  std::string challenge = "WWW-Authenticate: Bearer realm=\"http://" + tokens.host() +
                          "/token\",service=\"test\",scope=\"repository:lib/x:pull\"";
  ScriptedServer reg([&](const HttpRequest& r) {
    if (!r.headers.count("authorization") || r.headers.at("authorization") != "Bearer t0k3n")
      return response(
          401, "Unauthorized", {challenge},
          R"({"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]})");
    return response(307, "Temporary Redirect",
                    {"Location: http://" + storage.host() + "/bucket/blob?sig=1"}, "");
  });
  test::TempDir tmp("racker-reg");
  ContentStore cs(tmp.path());
  RegistryClient c(insecure(reg.host()), {"user", "pass"});
  c.set_policy(fast_policy());
  EXPECT_EQ(pull_blob(c, cs, "lib/x", digest, blob.size()), blob);
  auto t = tokens.requests();
  ASSERT_EQ(t.size(), 1u);
  EXPECT_EQ(t[0].target, "/token?service=test&scope=repository%3Alib%2Fx%3Apull");
  auto st = storage.requests();
  ASSERT_EQ(st.size(), 1u);
  EXPECT_EQ(st[0].target, "/bucket/blob?sig=1");
  EXPECT_EQ(st[0].headers.count("authorization"), 0u);  // never leaked to the other host
  // The cached token is reused: one more blob, no new token request.
  cs.remove_blob(digest);
  pull_blob(c, cs, "lib/x", digest, blob.size());
  EXPECT_EQ(tokens.requests().size(), 1u);

  RegistryClient bad(insecure(reg.host()), {"user", "nope"});
  bad.set_policy(fast_policy());
  EXPECT_EQ(error_of([&] { bad.get_manifest("lib/x", "1"); }),
            "GET http://" + tokens.host() +
                "/token?service=test&scope=repository%3Alib%2Fx%3Apull: 401 unauthorized: "
                "invalid username or password");
}

TEST(ScriptedRegistry, Schema1IsRefused) {
  ScriptedServer s([&](const HttpRequest&) {
    return response(200, "OK",
                    {"Content-Type: application/vnd.docker.distribution.manifest.v1+prettyjws"},
                    R"({"schemaVersion":1,"name":"lib/x","tag":"1","fsLayers":[]})");
  });
  RegistryClient c(insecure(s.host()), {});
  EXPECT_EQ(
      error_of([&] { c.get_manifest("lib/x", "1"); }),
      "GET http://" + s.host() + "/v2/lib/x/manifests/1: schema1 manifests are not supported");
}

TEST(ScriptedRegistry, ManifestDigestIsVerified) {
  std::string body =
      R"({"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]})";
  std::string wrong = sha256_digest("something else");
  ScriptedServer s([&](const HttpRequest&) {
    return response(200, "OK",
                    {"Content-Type: application/json", "Docker-Content-Digest: " + wrong}, body);
  });
  RegistryClient c(insecure(s.host()), {});
  EXPECT_EQ(error_of([&] { c.get_manifest("lib/x", "1"); }),
            "GET http://" + s.host() + "/v2/lib/x/manifests/1: digest mismatch for " + wrong +
                ": got " + sha256_digest(body));
  EXPECT_EQ(error_of([&] { c.get_manifest("lib/x", wrong); }),
            "GET http://" + s.host() + "/v2/lib/x/manifests/" + wrong + ": digest mismatch for " +
                wrong + ": got " + sha256_digest(body));
}
