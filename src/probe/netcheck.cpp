#include "probe/netcheck.hpp"

#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <thread>

#include "base/error.hpp"
#include "base/fd.hpp"
#include "base/strings.hpp"
#include "engine/os_container.hpp"
#include "image/http.hpp"

namespace racker::probe {
namespace {

using Clock = std::chrono::steady_clock;

long ms_since(Clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t).count();
}

// TCP connect within timeout_ms; "" on success, else why not.
std::string tcp_connect(const std::string& host, int port, int timeout_ms) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  std::string where = host + ":" + std::to_string(port);
  int g = ::getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &res);
  if (g != 0) return "resolve " + host + ": " + ::gai_strerror(g);
  std::string why = "connect " + where + ": no address";
  auto start = Clock::now();
  for (addrinfo* a = res; a; a = a->ai_next) {
    UniqueFd fd(::socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (!fd) {
      why = "socket: " + std::string(std::strerror(errno));
      continue;
    }
    int rc = ::connect(fd.get(), a->ai_addr, a->ai_addrlen);
    if (rc != 0 && errno != EINPROGRESS) {
      why = "connect " + where + ": " + std::strerror(errno);
      continue;
    }
    if (rc != 0) {
      pollfd p{fd.get(), POLLOUT, 0};
      int left = timeout_ms - static_cast<int>(ms_since(start));
      int n = left > 0 ? ::poll(&p, 1, left) : 0;
      if (n <= 0) {
        why = "connect " + where + ": timed out";
        continue;
      }
      int err = 0;
      socklen_t len = sizeof err;
      ::getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &err, &len);
      if (err != 0) {
        why = "connect " + where + ": " + std::strerror(err);
        continue;
      }
    }
    ::freeaddrinfo(res);
    return "";
  }
  ::freeaddrinfo(res);
  return why;
}

// An HTTP GET (redirects not followed); passes with any status unless u names classes. Sets
// status.
std::string http_get(const CheckUrl& u, int timeout_ms, long& status) {
  try {
    image::http::Session session;
    session.options.tls_verify = false;  // a probe checks that the service answers
    auto secs = std::chrono::seconds(std::max(1, timeout_ms / 1000));
    session.options.connect_timeout = secs;
    session.options.stall_timeout = secs;
    image::http::Request q;
    q.url = u.url;
    q.headers.push_back("User-Agent: postroj/" RACKER_VERSION);
    q.sink = [](const image::http::Response&, const char*, size_t) { return true; };
    auto r = session.perform(q, u.url);
    if (r.failure) return u.url + ": " + r.failure->message;
    status = r.status;
    if (u.status_classes.empty()) return "";  // it answers
    for (int c : u.status_classes)
      if (status / 100 == c) return "";
    std::string want;
    for (int c : u.status_classes) {
      if (!want.empty()) want += ',';
      want += static_cast<char>('0' + c);
      want += "xx";
    }
    return u.url + ": HTTP " + std::to_string(status) + " (--http-status=" + want + ")";
  } catch (const std::exception& e) {
    return u.url + ": " + e.what();
  }
}

// Runs in the child: setns, then the check. Writes "<status> <message>" to fd.
void child_check(int fd, const std::string& netns_path, const CheckUrl& u, int timeout_ms) {
  std::string msg;
  long status = 0;
  if (!netns_path.empty()) {
    int ns = ::open(netns_path.c_str(), O_RDONLY | O_CLOEXEC);
    if (ns < 0 || ::setns(ns, CLONE_NEWNET) != 0)
      msg = "enter network namespace " + netns_path + ": " + std::strerror(errno);
  }
  if (msg.empty()) {
    auto start = Clock::now();
    msg = tcp_connect(u.host, u.port, timeout_ms);
    if (msg.empty() && u.scheme != "tcp")
      msg = http_get(u, std::max(100, timeout_ms - static_cast<int>(ms_since(start))), status);
  }
  std::string line = std::to_string(status) + " " + msg;
  ssize_t w = ::write(fd, line.data(), line.size());
  (void)w;
}

}  // namespace

CheckUrl parse_check_url(const std::string& url) {
  auto bad = [&](const std::string& why) {
    return Error("invalid --check-network URL \"" + url + "\": " + why, EINVAL);
  };
  CheckUrl u;
  u.url = url;
  auto se = url.find("://");
  if (se == std::string::npos) throw bad("expected http://, https:// or tcp://HOST:PORT");
  u.scheme = url.substr(0, se);
  for (auto& c : u.scheme) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (u.scheme != "http" && u.scheme != "https" && u.scheme != "tcp")
    throw bad("unsupported scheme \"" + u.scheme + "\" (http, https, tcp)");
  std::string rest = url.substr(se + 3);
  auto slash = rest.find_first_of("/?#");
  std::string authority = rest.substr(0, slash);
  u.path = slash == std::string::npos ? "/" : rest.substr(slash);
  if (authority.find('@') != std::string::npos) throw bad("credentials are not supported");
  std::string port_text;
  if (!authority.empty() && authority[0] == '[') {
    auto close = authority.find(']');
    if (close == std::string::npos) throw bad("unterminated IPv6 address");
    u.host = authority.substr(1, close - 1);
    std::string after = authority.substr(close + 1);
    if (!after.empty()) {
      if (after[0] != ':') throw bad("junk after the IPv6 address");
      port_text = after.substr(1);
      if (port_text.empty()) throw bad("empty port");
    }
  } else {
    auto colon = authority.rfind(':');
    u.host = authority.substr(0, colon);
    if (colon != std::string::npos) {
      port_text = authority.substr(colon + 1);
      if (port_text.empty()) throw bad("empty port");
    }
  }
  if (u.host.empty()) throw bad("no host");
  if (!port_text.empty()) {
    auto p = parse_int(port_text);
    if (!p || *p < 1 || *p > 65535) throw bad("invalid port \"" + port_text + "\"");
    u.port = static_cast<int>(*p);
  } else if (u.scheme == "http") {
    u.port = 80;
  } else if (u.scheme == "https") {
    u.port = 443;
  } else {
    throw bad("tcp:// needs a port");
  }
  if (u.scheme == "tcp" && u.path != "/") throw bad("tcp:// takes no path");
  return u;
}

std::vector<int> parse_status_classes(const std::string& text) {
  std::vector<int> out;
  if (text == "any") return out;
  for (auto& c : split(text, ',')) {
    if (c.size() != 3 || c[0] < '1' || c[0] > '5' || c.substr(1) != "xx")
      throw Error("invalid --http-status \"" + text + "\": \"" + c +
                      "\" is not a status class (1xx ... 5xx; e.g. 2xx,3xx, or any)",
                  EINVAL, ErrorKind::invalid);
    out.push_back(c[0] - '0');
  }
  if (out.empty())
    throw Error("invalid --http-status \"\": use classes like 2xx,3xx, or any", EINVAL,
                ErrorKind::invalid);
  return out;
}

NetCheckResult check_once(const std::string& netns_path, const CheckUrl& u, int timeout_ms) {
  NetCheckResult r;
  r.attempts = 1;
  if (u.scheme != "tcp") {
    // load libcurl before the fork: the child should not run the dynamic loader
    try {
      image::http::load_libcurl();
    } catch (const std::exception& e) {
      r.message = e.what();
      return r;
    }
  }
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) {
    r.message = std::string("pipe: ") + std::strerror(errno);
    return r;
  }
  UniqueFd rd(fds[0]), wr(fds[1]);
  pid_t pid = ::fork();
  if (pid < 0) {
    r.message = std::string("fork: ") + std::strerror(errno);
    return r;
  }
  if (pid == 0) {
    // never let an exception leave the child
    try {
      rd.reset();
      child_check(wr.get(), netns_path, u, timeout_ms);
    } catch (...) {
    }
    ::_exit(0);
  }
  wr.reset();
  std::string out;
  auto start = Clock::now();
  bool timed_out = false;
  for (;;) {
    int left = timeout_ms + 1000 - static_cast<int>(ms_since(start));
    if (left <= 0) {
      timed_out = true;
      break;
    }
    pollfd p{rd.get(), POLLIN, 0};
    int n = ::poll(&p, 1, left);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      timed_out = true;
      break;
    }
    char buf[1024];
    ssize_t got = ::read(rd.get(), buf, sizeof buf);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) break;
    out.append(buf, static_cast<size_t>(got));
  }
  if (timed_out) ::kill(pid, SIGKILL);
  int st = 0;
  while (::waitpid(pid, &st, 0) < 0 && errno == EINTR) {
  }
  if (timed_out) {
    r.message = u.url + ": no answer within " + std::to_string(timeout_ms) + " ms";
    return r;
  }
  auto sp = out.find(' ');
  if (sp == std::string::npos) {
    r.message = "network check of " + u.url + " ended without a result";
    return r;
  }
  r.http_status = parse_int(out.substr(0, sp)).value_or(0);
  r.message = out.substr(sp + 1);
  r.ok = r.message.empty();
  return r;
}

NetCheckResult check_until(const std::string& netns_path, const CheckUrl& u, int total_timeout_ms) {
  auto start = Clock::now();
  int attempts = 0;
  for (;;) {
    int left = total_timeout_ms - static_cast<int>(ms_since(start));
    auto r = check_once(netns_path, u, std::clamp(left, 200, 5000));
    r.attempts = ++attempts;
    if (r.ok) return r;
    long elapsed = ms_since(start);
    if (elapsed + 250 >= total_timeout_ms) return r;
    if (engine::OsContainer::interrupted()) return r;  // the container is gone
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
  }
}

}  // namespace racker::probe
