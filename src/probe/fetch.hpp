// Packages for pkgprobe: a local path, or an http(s) URL downloaded on the host into a cache
// directory (default /var/cache/postroj/packages, an ordinary user's ~/.cache/postroj/packages). A
// download goes to <file>.part first and resumes from where it stopped (HTTP Range) when tried
// again; it is renamed into place when complete. Concurrent fetches of the same URL wait for each
// other (a lock per file).
#pragma once

#include <cstdint>
#include <functional>
#include <string>

namespace racker::probe {

inline constexpr const char* kDefaultPackageCache = "/var/cache/postroj/packages";
// root's kDefaultPackageCache; an ordinary user's $XDG_CACHE_HOME/postroj/packages (else
// ~/.cache/postroj/packages).
std::string default_package_cache();
// Where rootfs tarballs (catalog tarball sources) are downloaded: /var/cache/postroj/downloads,
// an ordinary user's $XDG_CACHE_HOME/postroj/downloads.
std::string default_download_cache();

struct PackageArg {
  bool is_url = false;
  std::string url;        // http(s)://... when is_url
  std::string path;       // the local file otherwise (absolute)
  std::string file_name;  // base name as the package manager should see it: "nginx_1.2.deb"
};

// Parses a --package value: an http:// or https:// URL (the file name is the last path
// component, without query or fragment) or a path to an existing regular file. Throws
// racker::Error "package X: ..." (EINVAL/ENOENT) for other schemes, URLs without a file name,
// and missing files.
PackageArg parse_package_arg(const std::string& arg);

// The cache file of a URL: <cache>/<sha256(url) 16 hex>-<file name>.
std::string cache_path_for(const std::string& cache_dir, const PackageArg& p);

struct FetchOptions {
  std::string cache_dir = default_package_cache();
  bool refresh = false;  // download again even when the file is cached
  long timeout_s = 600;  // whole transfer
  long connect_timeout_s = 30;
  std::string noun = "package";  // what errors call the file: "package URL: HTTP 404"
  std::function<void(const std::string&)> on_status;
};

struct FetchResult {
  std::string path;  // the file on the host
  bool from_cache = false;
  uint64_t resumed_from = 0;  // bytes already in the .part file that were kept
  uint64_t size = 0;
};

// Returns the host file for the package, downloading URLs (with resume). Throws racker::Error
// with one line: "package https://host/x.deb: HTTP 404", "package ...: couldn't connect ...".
FetchResult fetch_package(const PackageArg& p, const FetchOptions& o);

}  // namespace racker::probe
