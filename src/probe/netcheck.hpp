// Network checks measured from inside a container's network namespace: a child process
// setns()es into it (so the host's own network and ports play no part), connects over TCP
// and, for http(s), requires an HTTP answer: any status, as the original postroj counted a
// service that answers as up, or one of the status classes asked for (--http-status=2xx,3xx).
// Retried until a deadline, for services that are still starting.
#pragma once

#include <string>
#include <vector>

namespace racker::probe {

struct CheckUrl {
  std::string scheme;               // "http", "https", "tcp"
  std::string host;                 // without brackets for IPv6
  int port = 0;                     // defaulted from the scheme (80, 443)
  std::string path;                 // "/..." for http(s)
  std::string url;                  // as given
  std::vector<int> status_classes;  // http(s): 2 for 2xx, ...; empty: any answer will do
};

// "2xx,3xx" -> {2, 3}; "any" -> {}. Throws racker::Error naming the bad class (EINVAL).
std::vector<int> parse_status_classes(const std::string& text);

// Parses http://host[:port][/path], https://..., or tcp://host:port; throws racker::Error
// "invalid --check-network URL "x": ..." (EINVAL).
CheckUrl parse_check_url(const std::string& url);

struct NetCheckResult {
  bool ok = false;
  int attempts = 0;
  long http_status = 0;  // 0 for tcp
  std::string message;   // the last failure ("connect 127.0.0.1:80: connection refused")
};

// One attempt in the netns at netns_path (e.g. /proc/<pid>/ns/net; "" = this process's own),
// bounded by timeout_ms; never throws.
NetCheckResult check_once(const std::string& netns_path, const CheckUrl& u, int timeout_ms);
// Attempts until one passes or total_timeout_ms is over (at least one attempt).
NetCheckResult check_until(const std::string& netns_path, const CheckUrl& u, int total_timeout_ms);

}  // namespace racker::probe
