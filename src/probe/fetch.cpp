#include "probe/fetch.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "base/error.hpp"
#include "base/fd.hpp"
#include "base/file_lock.hpp"
#include "base/fs.hpp"
#include "engine/rootless.hpp"
#include "image/digest.hpp"
#include "image/http.hpp"

namespace racker::probe {

namespace {
std::string cache_dir_named(const char* name) {
  if (!engine::rootless()) return std::string("/var/cache/postroj/") + name;
  for (const char* var : {"XDG_CACHE_HOME", "HOME"}) {
    const char* v = std::getenv(var);
    if (v && *v == '/')
      return std::string(v) + (var[0] == 'X' ? "" : "/.cache") + "/postroj/" + name;
  }
  throw Error("postroj: HOME is not set (an ordinary user's caches are kept there)", EINVAL);
}
}  // namespace

std::string default_package_cache() {
  return cache_dir_named("packages");
}

std::string default_download_cache() {
  return cache_dir_named("downloads");
}
namespace http = image::http;
namespace {

std::string strip_query(const std::string& url) {
  auto q = url.find_first_of("?#");
  return q == std::string::npos ? url : url.substr(0, q);
}

bool safe_file_name(const std::string& n) {
  if (n.empty() || n == "." || n == "..") return false;
  for (char c : n)
    if (c == '/' || c == '\0' || static_cast<unsigned char>(c) < 0x20) return false;
  return true;
}

// Percent-decodes a URL path component (file names like "foo%2B1.deb").
std::string url_decode(const std::string& s) {
  std::string o;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size() && std::isxdigit(static_cast<unsigned char>(s[i + 1])) &&
        std::isxdigit(static_cast<unsigned char>(s[i + 2]))) {
      o += static_cast<char>(std::stoi(s.substr(i + 1, 2), nullptr, 16));
      i += 2;
    } else {
      o += s[i];
    }
  }
  return o;
}

// Writes 2xx bodies into the .part file; a 200 (the server ignored our Range) starts it over.
struct Sink {
  int fd = -1;
  bool truncated = false;
  bool failed_write = false;
  int write_errno = 0;

  bool write(long status, const char* data, size_t len) {
    if (status == 200 && !truncated) {
      if (::ftruncate(fd, 0) != 0 || ::lseek(fd, 0, SEEK_SET) != 0) return fail();
      truncated = true;
    }
    size_t done = 0;
    while (done < len) {
      ssize_t w = ::write(fd, data + done, len - done);
      if (w < 0) {
        if (errno == EINTR) continue;
        return fail();
      }
      done += static_cast<size_t>(w);
    }
    return true;
  }
  bool fail() {
    failed_write = true;
    write_errno = errno;
    return false;
  }
};

uint64_t file_size(int fd) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) return 0;
  return static_cast<uint64_t>(st.st_size);
}

}  // namespace

PackageArg parse_package_arg(const std::string& arg) {
  PackageArg p;
  if (arg.empty()) throw Error("package: empty argument", EINVAL);
  auto scheme_end = arg.find("://");
  if (scheme_end != std::string::npos) {
    std::string scheme = arg.substr(0, scheme_end);
    for (auto& c : scheme) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (scheme != "http" && scheme != "https")
      throw Error("package " + arg + ": unsupported URL scheme \"" + scheme +
                      "\" (http, https or a local path)",
                  EINVAL);
    std::string rest = strip_query(arg.substr(scheme_end + 3));
    auto slash = rest.find('/');
    if (slash == 0 || rest.empty()) throw Error("package " + arg + ": URL has no host", EINVAL);
    std::string path = slash == std::string::npos ? "" : rest.substr(slash);
    std::string name = url_decode(path.substr(path.find_last_of('/') + 1));
    if (!safe_file_name(name))
      throw Error("package " + arg + ": URL does not end in a file name", EINVAL);
    p.is_url = true;
    p.url = arg;
    p.file_name = name;
    return p;
  }
  struct stat st {};
  if (::stat(arg.c_str(), &st) != 0)
    throw Error("package " + arg + ": " + std::strerror(errno), errno);
  if (!S_ISREG(st.st_mode)) throw Error("package " + arg + ": not a regular file", EINVAL);
  p.path = real_path(arg);
  p.file_name = p.path.substr(p.path.find_last_of('/') + 1);
  return p;
}

std::string cache_path_for(const std::string& cache_dir, const PackageArg& p) {
  std::string hex = image::sha256_digest(p.url).substr(7, 16);
  return cache_dir + "/" + hex + "-" + p.file_name;
}

FetchResult fetch_package(const PackageArg& p, const FetchOptions& o) {
  FetchResult r;
  if (!p.is_url) {
    r.path = p.path;
    r.from_cache = true;
    struct stat st {};
    if (::stat(p.path.c_str(), &st) != 0)
      throw Error("package " + p.path + ": " + std::strerror(errno), errno);
    r.size = static_cast<uint64_t>(st.st_size);
    return r;
  }
  std::string what = o.noun + " " + p.url;
  try {
    mkdir_p(o.cache_dir);
  } catch (const Error& e) {
    throw e.with_context(what);
  }
  std::string final_path = cache_path_for(o.cache_dir, p);
  FileLock lock(final_path + ".lock", FileLock::File::transient);
  r.path = final_path;
  struct stat st {};
  if (!o.refresh && ::stat(final_path.c_str(), &st) == 0) {
    r.from_cache = true;
    r.size = static_cast<uint64_t>(st.st_size);
    return r;
  }
  std::string part = final_path + ".part";
  for (int attempt = 0;; ++attempt) {
    UniqueFd fd(::open(part.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644));
    if (!fd) throw_errno(what + ": open " + part);
    uint64_t have = file_size(fd.get());
    if (::lseek(fd.get(), 0, SEEK_END) < 0) throw_errno(what + ": seek " + part);

    http::Session session;
    session.options.connect_timeout = std::chrono::seconds(o.connect_timeout_s);
    if (o.on_status)
      o.on_status(have > 0
                      ? "fetching " + p.url + " (resuming at " + std::to_string(have) + " bytes)"
                      : "fetching " + p.url);
    http::Request q;
    q.url = p.url;
    q.headers.push_back("User-Agent: postroj/" RACKER_VERSION);
    if (have > 0) q.headers.push_back("Range: bytes=" + std::to_string(have) + "-");
    Sink sink;
    sink.fd = fd.get();
    q.sink = [&](const http::Response& resp, const char* data, size_t len) {
      return sink.write(resp.status, data, len);
    };
    std::string url = p.url;
    http::Response resp;
    for (int hops = 0;; ++hops) {
      resp = session.perform(q, url);
      if (!resp.transport_ok() || resp.status < 300 || resp.status >= 400 ||
          resp.redirect_url.empty())
        break;
      if (hops == 10) throw Error(what + ": too many redirects", ELOOP);
      url = resp.redirect_url;
    }
    long status = resp.status;
    if (sink.failed_write)
      throw Error(what + ": write " + part + ": " + std::strerror(sink.write_errno),
                  sink.write_errno);
    if (status == 416 && have > 0 && attempt == 0) {
      // nothing past what we hold: the .part file is stale (the file changed); start over once
      if (::unlink(part.c_str()) != 0) throw_errno(what + ": remove stale " + part);
      if (o.on_status) o.on_status("partial download of " + p.url + " is stale, starting over");
      continue;
    }
    if (resp.failure) throw Error(what + ": " + resp.failure->message, resp.failure->err);
    if (status < 200 || status >= 300) throw Error(what + ": HTTP " + std::to_string(status), EIO);
    if (status == 200 && !sink.truncated && have > 0 && ::ftruncate(fd.get(), 0) != 0)
      throw_errno(what + ": truncate " + part);  // a full, empty response
    r.resumed_from = status == 206 ? have : 0;
    if (::fsync(fd.get()) != 0) throw_errno(what + ": fsync " + part);
    r.size = file_size(fd.get());
    if (::rename(part.c_str(), final_path.c_str()) != 0) throw_errno(what + ": rename " + part);
    return r;
  }
}

}  // namespace racker::probe
