// A tiny HTTP/1.0 server on 127.0.0.1 for the probe tests: serves fixed bodies by path,
// honours "Range: bytes=N-", answers 404 for unknown paths, and can cut a response short
// (a dropped connection) to exercise resumed downloads.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

class TestServer {
 public:
  struct File {
    std::string body;
    size_t cut_after = 0;  // > 0: the first full (non-range) answer stops after this many bytes
    int status = 200;
  };

  TestServer() {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    ::setsockopt(fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a);
    socklen_t len = sizeof a;
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    ::listen(fd_, 16);
    thread_ = std::thread([this] { loop(); });
  }
  ~TestServer() {
    stop_ = true;
    thread_.join();
    ::close(fd_);
  }

  void add(const std::string& path, File f) {
    std::lock_guard<std::mutex> l(mu_);
    files_[path] = std::move(f);
  }
  std::string url(const std::string& path) const {
    return "http://127.0.0.1:" + std::to_string(port_) + path;
  }
  int port() const { return port_; }
  std::vector<std::string> ranges() {
    std::lock_guard<std::mutex> l(mu_);
    return ranges_;
  }
  int requests() const { return requests_; }

 private:
  void loop() {
    while (!stop_) {
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, 50) <= 0) continue;
      int c = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (c < 0) continue;
      serve(c);
      ::close(c);
    }
  }

  void serve(int c) {
    std::string req;
    char buf[4096];
    while (req.find("\r\n\r\n") == std::string::npos) {
      ssize_t n = ::read(c, buf, sizeof buf);
      if (n <= 0) return;
      req.append(buf, static_cast<size_t>(n));
    }
    ++requests_;
    auto sp1 = req.find(' '), sp2 = req.find(' ', sp1 + 1);
    std::string path = req.substr(sp1 + 1, sp2 - sp1 - 1);
    size_t from = 0;
    bool ranged = false;
    if (auto r = req.find("Range: bytes="); r != std::string::npos) {
      auto end = req.find('-', r);
      std::string v = req.substr(r + 13, end - r - 13);
      from = std::stoul(v);
      ranged = true;
      std::lock_guard<std::mutex> l(mu_);
      ranges_.push_back(v + "-");
    }
    File f;
    bool found = false;
    {
      std::lock_guard<std::mutex> l(mu_);
      auto it = files_.find(path);
      if (it != files_.end()) {
        f = it->second;
        found = true;
        it->second.cut_after = 0;  // only the first answer is cut
      }
    }
    if (!found || f.status != 200) {
      int st = found ? f.status : 404;
      std::string body = "no such file\n";
      send(c, "HTTP/1.0 " + std::to_string(st) +
                  " Nope\r\nContent-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body);
      return;
    }
    if (ranged && from >= f.body.size()) {
      send(c, "HTTP/1.0 416 Range Not Satisfiable\r\nContent-Length: 0\r\n\r\n");
      return;
    }
    std::string head, body;
    if (ranged) {
      body = f.body.substr(from);
      head = "HTTP/1.0 206 Partial Content\r\nContent-Range: bytes " + std::to_string(from) + "-" +
             std::to_string(f.body.size() - 1) + "/" + std::to_string(f.body.size()) + "\r\n";
    } else {
      body = f.body;
      head = "HTTP/1.0 200 OK\r\n";
    }
    head += "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n";
    if (!ranged && f.cut_after > 0) body = body.substr(0, f.cut_after);
    send(c, head + body);
  }

  static void send(int c, const std::string& s) {
    size_t done = 0;
    while (done < s.size()) {
      ssize_t n = ::write(c, s.data() + done, s.size() - done);
      if (n <= 0) return;
      done += static_cast<size_t>(n);
    }
  }

  int fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<int> requests_{0};
  std::mutex mu_;
  std::map<std::string, File> files_;
  std::vector<std::string> ranges_;
  std::thread thread_;
};
