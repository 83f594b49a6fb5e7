#include "engine/ports.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <thread>

#include "base/error.hpp"
#include "base/fd.hpp"
#include "base/fs.hpp"
#include "base/strings.hpp"

namespace racker::engine {
namespace {

constexpr size_t kMaxPorts = 4096;
constexpr const char* kProxyName = "racker-ports";

Error bad_spec(const std::string& spec, const std::string& why) {
  return Error("invalid -p \"" + spec + "\": " + why, EINVAL, ErrorKind::invalid);
}

// "80" or "8000-8010" -> {first, last}; port 0 only where zero_ok (an empty host part).
std::pair<uint16_t, uint16_t> parse_range(const std::string& spec, const std::string& s,
                                          const char* what) {
  auto dash = s.find('-');
  auto one = [&](const std::string& p) -> uint16_t {
    auto n = parse_uint(p);
    if (!n || *n == 0 || *n > 65535)
      throw bad_spec(spec, std::string(what) + " \"" + p + "\" is not a port (1-65535)");
    return static_cast<uint16_t>(*n);
  };
  if (dash == std::string::npos) {
    uint16_t p = one(s);
    return {p, p};
  }
  uint16_t a = one(s.substr(0, dash)), b = one(s.substr(dash + 1));
  if (b < a) throw bad_spec(spec, std::string(what) + " range \"" + s + "\" runs backwards");
  return {a, b};
}

std::string spec_of(const PortMapping& m) {
  return m.proto + ":" + std::to_string(m.container_port);
}

std::string pid_file_of(const std::string& root, const std::string& id) {
  return root + "/ports/" + id + ".pid";
}

bool send_all(int fd, const char* p, size_t n) {
  while (n > 0) {
    ssize_t w = ::send(fd, p, n, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    p += w;
    n -= static_cast<size_t>(w);
  }
  return true;
}

// Copies from -> to until end of file (then half-closes to) or an error (then shuts both
// down, which ends the other direction too).
void pump(int from, int to) {
  char buf[65536];
  for (;;) {
    ssize_t n = ::recv(from, buf, sizeof buf, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n == 0) {
      ::shutdown(to, SHUT_WR);
      return;
    }
    if (n < 0 || !send_all(to, buf, static_cast<size_t>(n))) {
      ::shutdown(from, SHUT_RDWR);
      ::shutdown(to, SHUT_RDWR);
      return;
    }
  }
}

void relay_tcp(int client, sockaddr_in target) {
  UniqueFd c(client);
  UniqueFd s(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!s) return;
  int r;
  do {
    r = ::connect(s.get(), reinterpret_cast<sockaddr*>(&target), sizeof target);
  } while (r != 0 && errno == EINTR);
  if (r != 0) return;  // nothing listens in the container: the client sees its connection end
  std::thread back(pump, s.get(), c.get());
  pump(c.get(), s.get());
  back.join();
}

void serve_tcp(int listener, sockaddr_in target) {
  for (;;) {
    int c = ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
    if (c < 0) {
      if (errno == EMFILE || errno == ENFILE || errno == ENOMEM || errno == ENOBUFS)
        ::usleep(100000);
      continue;
    }
    std::thread(relay_tcp, c, target).detach();
  }
}

// One socket in the namespace per client address; a client quiet for 3 minutes is forgotten.
void serve_udp(int listener, sockaddr_in target) {
  std::mutex mu;
  std::map<std::pair<uint32_t, uint16_t>, int> peers;
  char buf[65536];
  for (;;) {
    sockaddr_in from{};
    socklen_t len = sizeof from;
    ssize_t n = ::recvfrom(listener, buf, sizeof buf, 0, reinterpret_cast<sockaddr*>(&from), &len);
    if (n < 0) continue;
    auto key = std::make_pair(from.sin_addr.s_addr, from.sin_port);
    int s = -1;
    {
      std::lock_guard<std::mutex> lock(mu);
      if (auto it = peers.find(key); it != peers.end()) s = it->second;
    }
    if (s < 0) {
      s = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
      if (s < 0) continue;
      if (::connect(s, reinterpret_cast<sockaddr*>(&target), sizeof target) != 0) {
        ::close(s);
        continue;
      }
      {
        std::lock_guard<std::mutex> lock(mu);
        peers[key] = s;
      }
      std::thread([&mu, &peers, key, s, from, listener] {
        char back[65536];
        for (;;) {
          pollfd p{s, POLLIN, 0};
          int r = ::poll(&p, 1, 180000);
          if (r < 0 && errno == EINTR) continue;
          if (r <= 0) break;
          ssize_t m = ::recv(s, back, sizeof back, 0);
          if (m < 0 && (errno == EINTR || errno == ECONNREFUSED)) continue;
          if (m < 0) break;
          ::sendto(listener, back, static_cast<size_t>(m), 0,
                   reinterpret_cast<const sockaddr*>(&from), sizeof from);
        }
        std::lock_guard<std::mutex> lock(mu);
        peers.erase(key);
        ::close(s);
      }).detach();
    }
    (void)!::send(s, buf, static_cast<size_t>(n), 0);
  }
}

// The container's own address in the namespace we are in: its first IPv4 address that is not
// loopback (eth0's), else 127.0.0.1.
in_addr container_address() {
  in_addr out{};
  out.s_addr = htonl(INADDR_LOOPBACK);
  ifaddrs* list = nullptr;
  if (::getifaddrs(&list) != 0) return out;
  for (ifaddrs* i = list; i; i = i->ifa_next) {
    if (!i->ifa_addr || i->ifa_addr->sa_family != AF_INET || (i->ifa_flags & IFF_LOOPBACK))
      continue;
    out = reinterpret_cast<sockaddr_in*>(i->ifa_addr)->sin_addr;
    break;
  }
  ::freeifaddrs(list);
  return out;
}

}  // namespace

nlohmann::json PortMapping::to_json() const {
  return {{"host_ip", host_ip},
          {"host_port", host_port},
          {"container_port", container_port},
          {"proto", proto}};
}

PortMapping PortMapping::from_json(const nlohmann::json& j) {
  PortMapping m;
  if (!j.is_object()) return m;
  if (j.contains("host_ip") && j["host_ip"].is_string()) m.host_ip = j["host_ip"];
  if (j.contains("host_port") && j["host_port"].is_number_unsigned())
    m.host_port = static_cast<uint16_t>(j["host_port"].get<unsigned>());
  if (j.contains("container_port") && j["container_port"].is_number_unsigned())
    m.container_port = static_cast<uint16_t>(j["container_port"].get<unsigned>());
  if (j.contains("proto") && j["proto"].is_string()) m.proto = j["proto"];
  return m;
}

std::vector<PortMapping> parse_publish(const std::string& spec) {
  std::string rest = spec, proto = "tcp";
  if (auto slash = rest.rfind('/'); slash != std::string::npos) {
    proto = rest.substr(slash + 1);
    rest = rest.substr(0, slash);
    if (proto != "tcp" && proto != "udp")
      throw bad_spec(spec, "protocol \"" + proto + "\" is not tcp or udp");
  }
  if (rest.starts_with("["))
    throw bad_spec(spec, "IPv6 host addresses are not supported yet (IPv4 only)");
  auto parts = split(rest, ':');
  if (parts.empty() || parts.size() > 3 || rest.empty())
    throw bad_spec(spec, "use [IP:][HOSTPORT:]PORT[/tcp|/udp]");
  std::string ip = parts.size() == 3 ? parts[0] : "";
  std::string host = parts.size() >= 2 ? parts[parts.size() - 2] : "";
  std::string cont = parts.back();
  if (!ip.empty()) {
    in_addr a{};
    if (::inet_pton(AF_INET, ip.c_str(), &a) != 1)
      throw bad_spec(spec, "\"" + ip + "\" is not an IPv4 address");
    if (ip == "0.0.0.0") ip.clear();
  }
  auto [c0, c1] = parse_range(spec, cont, "container port");
  size_t count = static_cast<size_t>(c1 - c0) + 1;
  uint16_t h0 = 0;
  if (!host.empty()) {
    auto [a, b] = parse_range(spec, host, "host port");
    if (static_cast<size_t>(b - a) + 1 != count)
      throw bad_spec(spec, "the host and container ranges differ in length");
    h0 = a;
  }
  if (count > kMaxPorts) throw bad_spec(spec, "more than " + std::to_string(kMaxPorts) + " ports");
  std::vector<PortMapping> out;
  for (size_t i = 0; i < count; ++i) {
    PortMapping m;
    m.host_ip = ip;
    m.host_port = h0 ? static_cast<uint16_t>(h0 + i) : 0;
    m.container_port = static_cast<uint16_t>(c0 + i);
    m.proto = proto;
    out.push_back(m);
  }
  return out;
}

std::string describe(const PortMapping& m) {
  return (m.host_ip.empty() ? "0.0.0.0" : m.host_ip) + ":" + std::to_string(m.host_port) + "->" +
         std::to_string(m.container_port) + "/" + m.proto;
}

void start_port_proxy(const std::string& root, const std::string& id, const std::string& netns_path,
                      std::vector<PortMapping>& ports) {
  if (ports.empty()) return;
  if (ports.size() > kMaxPorts)
    throw Error("-p: more than " + std::to_string(kMaxPorts) + " ports", EINVAL,
                ErrorKind::invalid);
  std::vector<UniqueFd> socks;
  for (auto& m : ports) {
    bool tcp = m.proto == "tcp";
    UniqueFd s(::socket(AF_INET, (tcp ? SOCK_STREAM : SOCK_DGRAM) | SOCK_CLOEXEC, 0));
    if (!s) throw_errno("socket for -p");
    int one = 1;
    if (tcp) ::setsockopt(s.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(m.host_port);
    if (m.host_ip.empty())
      a.sin_addr.s_addr = htonl(INADDR_ANY);
    else
      ::inet_pton(AF_INET, m.host_ip.c_str(), &a.sin_addr);
    std::string what = "-p " + (m.host_ip.empty() ? "" : m.host_ip + ":") +
                       (m.host_port ? std::to_string(m.host_port) : "") + ":" +
                       std::to_string(m.container_port) + "/" + m.proto;
    if (::bind(s.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
      int e = errno;
      if (e == EADDRINUSE)
        throw Error(what + ": host port " + std::to_string(m.host_port) + "/" + m.proto +
                        " is already in use",
                    e, ErrorKind::conflict);
      if (e == EACCES)
        throw Error(what + ": host ports below " +
                        trim(read_file_if_exists("/proc/sys/net/ipv4/ip_unprivileged_port_start")
                                 .value_or("1024")) +
                        " need root (sysctl net.ipv4.ip_unprivileged_port_start)",
                    e, ErrorKind::invalid);
      if (e == EADDRNOTAVAIL)
        throw Error(what + ": " + m.host_ip + " is not an address of this host", e,
                    ErrorKind::invalid);
      throw Error(what + ": bind: " + std::strerror(e), e);
    }
    if (tcp && ::listen(s.get(), SOMAXCONN) != 0) throw_errno(what + ": listen");
    socklen_t len = sizeof a;
    if (::getsockname(s.get(), reinterpret_cast<sockaddr*>(&a), &len) == 0)
      m.host_port = ntohs(a.sin_port);
    socks.push_back(std::move(s));
  }
  mkdir_p(root + "/ports", 0700);
  std::string pid_file = pid_file_of(root, id);
  std::vector<std::string> argv_s = {"racker", "container", "port-proxy", netns_path, pid_file};
  for (auto& m : ports) argv_s.push_back(spec_of(m));
  std::vector<char*> argv;
  for (auto& s : argv_s) argv.push_back(s.data());
  argv.push_back(nullptr);
  int p[2];
  if (::pipe2(p, O_CLOEXEC) != 0) throw_errno("pipe for -p");
  UniqueFd status_r(p[0]), status_w(p[1]);
  pid_t child = ::fork();
  if (child < 0) throw_errno("fork the port proxy");
  if (child == 0) {
    // a grandchild in a session of its own: nobody's child of ours, outliving a detached run
    if (::fork() != 0) _exit(0);
    ::setsid();
    // everything to fds above the targets first (dup2 onto a target could close a source)
    int high = 10 + static_cast<int>(socks.size()) + 4;
    int st = ::fcntl(status_w.get(), F_DUPFD_CLOEXEC, high);
    std::vector<int> moved;
    for (auto& s : socks) moved.push_back(::fcntl(s.get(), F_DUPFD_CLOEXEC, high));
    int null = ::open("/dev/null", O_RDWR | O_CLOEXEC);
    for (int fd = 0; fd < 3; ++fd) ::dup2(null, fd);
    ::dup2(st, 3);
    for (size_t i = 0; i < moved.size(); ++i) ::dup2(moved[i], 4 + static_cast<int>(i));
    ::signal(SIGPIPE, SIG_DFL);
    ::execv("/proc/self/exe", argv.data());
    _exit(127);
  }
  status_w.reset();
  socks.clear();
  while (::waitpid(child, nullptr, 0) < 0 && errno == EINTR) {
  }
  std::string msg;
  pollfd pf{status_r.get(), POLLIN, 0};
  for (;;) {
    int r = ::poll(&pf, 1, 5000);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    char buf[256];
    ssize_t n = ::read(status_r.get(), buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    msg.append(buf, static_cast<size_t>(n));
  }
  if (trim(msg) == "ok") return;
  stop_port_proxy(root, id);
  throw Error("-p: the port proxy did not start" + (trim(msg).empty() ? "" : ": " + trim(msg)),
              EIO);
}

void stop_port_proxy(const std::string& root, const std::string& id) noexcept {
  std::string pid_file = pid_file_of(root, id);
  try {
    auto pid = parse_uint(trim(read_file_if_exists(pid_file).value_or("")));
    // the pid file is the proxy's own; a recycled pid would have another name
    if (pid && *pid > 1 &&
        trim(read_file_if_exists("/proc/" + std::to_string(*pid) + "/comm").value_or("")) ==
            kProxyName)
      ::kill(static_cast<pid_t>(*pid), SIGKILL);
  } catch (const Error&) {
  }
  ::unlink(pid_file.c_str());
}

int port_proxy_main(int status_fd, const std::string& netns_path, const std::string& pid_file,
                    const std::vector<std::string>& specs) {
  ::prctl(PR_SET_NAME, kProxyName);
  auto fail = [&](const std::string& why) {
    (void)!::write(status_fd, why.data(), why.size());
    return 1;
  };
  UniqueFd ns(::open(netns_path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!ns) return fail("open " + netns_path + ": " + std::strerror(errno));
  // every socket made from here on (the container's side) is in the container's namespace;
  // the inherited listeners stay in the host's
  if (::setns(ns.get(), CLONE_NEWNET) != 0)
    return fail("enter the container's network namespace: " + std::string(std::strerror(errno)));
  in_addr addr = container_address();
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGHUP);
  ::pthread_sigmask(SIG_BLOCK, &set, nullptr);  // inherited by the threads; main waits
  ::signal(SIGPIPE, SIG_IGN);
  try {
    write_file_atomic(pid_file, std::to_string(::getpid()) + "\n", 0600);
  } catch (const Error& e) {
    return fail(e.what());
  }
  for (size_t i = 0; i < specs.size(); ++i) {
    auto colon = specs[i].find(':');
    auto port = parse_uint(colon == std::string::npos ? "" : specs[i].substr(colon + 1));
    if (!port || *port == 0 || *port > 65535) return fail("bad port spec " + specs[i]);
    sockaddr_in target{};
    target.sin_family = AF_INET;
    target.sin_addr = addr;
    target.sin_port = htons(static_cast<uint16_t>(*port));
    int fd = 4 + static_cast<int>(i);
    ::fcntl(fd, F_SETFD, FD_CLOEXEC);
    if (specs[i].starts_with("udp:"))
      std::thread(serve_udp, fd, target).detach();
    else
      std::thread(serve_tcp, fd, target).detach();
  }
  (void)!::write(status_fd, "ok", 2);
  ::close(status_fd);
  // teardown stops us by the pid file; should a racker killed at the wrong moment have missed
  // it, the namespace's file going (teardown removes it) ends us too
  std::thread([netns_path] {
    while (path_exists(netns_path)) ::sleep(2);
    ::kill(::getpid(), SIGTERM);
  }).detach();
  int sig = 0;
  while (::sigwait(&set, &sig) != 0) {
  }
  ::unlink(pid_file.c_str());
  _exit(0);
}

}  // namespace racker::engine
