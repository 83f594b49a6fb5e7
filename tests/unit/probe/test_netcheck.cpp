#include <gtest/gtest.h>

#include "base/error.hpp"
#include "probe/netcheck.hpp"
#include "probe/pkgprobe.hpp"
#include "test_server.hpp"
#include "test_support.hpp"

using racker::Error;
using namespace racker::probe;

namespace {

std::string error_of(const std::string& url) {
  return racker::test::error_of([&] { parse_check_url(url); });
}

}  // namespace

TEST(CheckUrl, Parses) {
  auto u = parse_check_url("http://127.0.0.1:8080/health?x=1");
  EXPECT_EQ(u.scheme, "http");
  EXPECT_EQ(u.host, "127.0.0.1");
  EXPECT_EQ(u.port, 8080);
  EXPECT_EQ(u.path, "/health?x=1");
  EXPECT_EQ(parse_check_url("http://localhost").port, 80);
  EXPECT_EQ(parse_check_url("http://localhost").path, "/");
  EXPECT_EQ(parse_check_url("HTTPS://example.org/").port, 443);
  auto t = parse_check_url("tcp://[::1]:22");
  EXPECT_EQ(t.scheme, "tcp");
  EXPECT_EQ(t.host, "::1");
  EXPECT_EQ(t.port, 22);
  EXPECT_EQ(parse_check_url("http://[::1]/").port, 80);
}

TEST(CheckUrl, Errors) {
  EXPECT_EQ(error_of("localhost:80"),
            "invalid --check-network URL \"localhost:80\": expected http://, https:// or "
            "tcp://HOST:PORT");
  EXPECT_EQ(error_of("ftp://h/"),
            "invalid --check-network URL \"ftp://h/\": unsupported scheme \"ftp\" (http, https, "
            "tcp)");
  EXPECT_EQ(error_of("tcp://h"), "invalid --check-network URL \"tcp://h\": tcp:// needs a port");
  EXPECT_EQ(error_of("tcp://h:1/x"),
            "invalid --check-network URL \"tcp://h:1/x\": tcp:// takes no path");
  EXPECT_EQ(error_of("http://h:0/"),
            "invalid --check-network URL \"http://h:0/\": invalid port \"0\"");
  EXPECT_EQ(error_of("http://h:99999/"),
            "invalid --check-network URL \"http://h:99999/\": invalid port \"99999\"");
  EXPECT_EQ(error_of("http://h:/"), "invalid --check-network URL \"http://h:/\": empty port");
  EXPECT_EQ(error_of("http:///x"), "invalid --check-network URL \"http:///x\": no host");
  EXPECT_EQ(error_of("http://u:p@h/"),
            "invalid --check-network URL \"http://u:p@h/\": credentials are not supported");
  EXPECT_EQ(error_of("http://[::1/"),
            "invalid --check-network URL \"http://[::1/\": unterminated IPv6 address");
}

// Without a netns path the check runs in this process's own network: the in-test server.
TEST(NetCheck, HttpStatusesAndTcp) {
  TestServer srv;
  srv.add("/ok", {"fine"});
  srv.add("/moved", {"", 0, 301});
  srv.add("/err", {"", 0, 503});
  auto ok = check_once("", parse_check_url(srv.url("/ok")), 3000);
  EXPECT_TRUE(ok.ok) << ok.message;
  EXPECT_EQ(ok.http_status, 200);
  auto moved = check_once("", parse_check_url(srv.url("/moved")), 3000);
  EXPECT_TRUE(moved.ok) << moved.message;
  // any answer will do by default (the original's webfs example answers 404)
  auto answers = check_once("", parse_check_url(srv.url("/nope")), 3000);
  EXPECT_TRUE(answers.ok) << answers.message;
  EXPECT_EQ(answers.http_status, 404);
  auto strict = [&](const std::string& path) {
    auto u = parse_check_url(srv.url(path));
    u.status_classes = parse_status_classes("2xx,3xx");
    return check_once("", u, 3000);
  };
  EXPECT_TRUE(strict("/ok").ok);
  EXPECT_TRUE(strict("/moved").ok);
  auto missing = strict("/nope");
  EXPECT_FALSE(missing.ok);
  EXPECT_EQ(missing.message, srv.url("/nope") + ": HTTP 404 (--http-status=2xx,3xx)");
  EXPECT_EQ(strict("/err").message, srv.url("/err") + ": HTTP 503 (--http-status=2xx,3xx)");
  auto tcp = check_once("", parse_check_url("tcp://127.0.0.1:" + std::to_string(srv.port())), 3000);
  EXPECT_TRUE(tcp.ok) << tcp.message;
}

TEST(NetCheck, StatusClasses) {
  EXPECT_EQ(parse_status_classes("2xx,3xx"), (std::vector<int>{2, 3}));
  EXPECT_EQ(parse_status_classes("any"), std::vector<int>{});
  for (const char* bad : {"", "200", "6xx", "2xx,", "2XX"}) {
    try {
      parse_status_classes(bad);
      ADD_FAILURE() << bad;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("invalid --http-status"), std::string::npos) << bad;
    }
  }
}

TEST(NetCheck, RefusedIsRetriedUntilTheDeadline) {
  int port;
  {
    TestServer srv;
    port = srv.port();
  }
  auto u = parse_check_url("tcp://127.0.0.1:" + std::to_string(port));
  auto r = check_until("", u, 1200);
  EXPECT_FALSE(r.ok);
  EXPECT_GE(r.attempts, 2);
  EXPECT_EQ(r.message, "connect 127.0.0.1:" + std::to_string(port) + ": Connection refused");
}

TEST(NetCheck, BadNamespacePath) {
  auto r = check_once("/nonexistent/ns", parse_check_url("tcp://127.0.0.1:1"), 1000);
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.message, "enter network namespace /nonexistent/ns: No such file or directory");
}

TEST(Pkgprobe, InstallCommands) {
  EXPECT_EQ(install_command("apt", {"/tmp/postroj/a.deb"}),
            (std::vector<std::string>{"env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "install",
                                      "-y", "--no-install-recommends", "/tmp/postroj/a.deb"}));
  EXPECT_EQ(install_command("pacman", {"/x.pkg.tar.zst"}),
            (std::vector<std::string>{"pacman", "-U", "--noconfirm", "/x.pkg.tar.zst"}));
  EXPECT_EQ(install_command("zypper", {"/a.rpm"}).back(), "/a.rpm");
  EXPECT_EQ(install_command("dnf", {"/a.rpm"})[0], "dnf");
  EXPECT_THROW(install_command("emerge", {}), Error);
}

TEST(Pkgprobe, LastLines) {
  EXPECT_EQ(last_lines("a\nb\nc\n", 2), "b\nc");
  EXPECT_EQ(last_lines("a\nb\nc", 5), "a\nb\nc");
  EXPECT_EQ(last_lines("", 3), "");
  EXPECT_EQ(last_lines("one\n", 1), "one");
}

TEST(Pkgprobe, ValidateNamesTheBadArgument) {
  auto c = Catalog::parse(Catalog::builtin_text(), "built-in");
  PkgprobeOptions o;
  o.label = "debian-bookworm";
  EXPECT_NO_THROW(validate_pkgprobe(c, o));
  o.network_urls = {"gopher://x/"};
  EXPECT_THROW(validate_pkgprobe(c, o), Error);
  o.network_urls = {};
  o.units = {"../etc"};
  EXPECT_THROW(validate_pkgprobe(c, o), Error);
  o.units = {};
  o.label = "nope";
  EXPECT_THROW(validate_pkgprobe(c, o), Error);
}
