#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/error.hpp"
#include "base/fs.hpp"
#include "engine/net_leases.hpp"
#include "engine/network.hpp"

using namespace racker::engine::net;

TEST(Network, Ipv4ParseAndFormat) {
  EXPECT_EQ(parse_ipv4("10.213.0.1"), 0x0ad50001u);
  EXPECT_EQ(format_ipv4(0x0ad50001u), "10.213.0.1");
  for (auto bad : {"", "1.2.3", "1.2.3.4.5", "256.1.1.1", "1..2.3", "a.b.c.d", "1.2.3.0004"})
    EXPECT_FALSE(parse_ipv4(bad)) << bad;
  auto n = parse_cidr("10.213.7.9/16");
  ASSERT_TRUE(n);
  EXPECT_EQ(n->prefix, 16);
  EXPECT_EQ(n->mask(), 0xffff0000u);
  EXPECT_EQ(format_cidr(*n), "10.213.7.9/16");
  EXPECT_EQ(parse_cidr("1.2.3.4")->prefix, 32);
  EXPECT_EQ(parse_cidr("0.0.0.0/0")->mask(), 0u);
  EXPECT_FALSE(parse_cidr("1.2.3.4/33"));
  EXPECT_FALSE(parse_cidr("1.2.3.4/"));
}

TEST(Network, Overlaps) {
  auto a = *parse_cidr("10.213.0.0/16");
  EXPECT_TRUE(overlaps(a, *parse_cidr("10.213.5.0/24")));
  EXPECT_TRUE(overlaps(*parse_cidr("10.0.0.0/8"), a));
  EXPECT_FALSE(overlaps(a, *parse_cidr("10.214.0.0/16")));
  EXPECT_FALSE(overlaps(a, *parse_cidr("192.0.2.0/24")));
}

TEST(Network, ProcNetRouteAndSubnetChoice) {
  // this host's table: default via eth0, 192.0.2.0/24 on eth0, and our own bridge
  std::string text =
      "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"
      "eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n"
      "eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n"
      "racker0\t0000D50A\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n";
  auto routes = parse_proc_net_route(text, "racker0");
  ASSERT_EQ(routes.size(), 1u);
  EXPECT_EQ(format_cidr(routes[0]), "192.0.2.0/24");
  EXPECT_EQ(format_cidr(*pick_subnet(routes)), "10.213.0.0/16");
  // counted when it is someone else's: the next candidate
  auto all = parse_proc_net_route(text, "");
  ASSERT_EQ(all.size(), 2u);
  EXPECT_EQ(format_cidr(*pick_subnet(all)), "10.214.0.0/16");
  // a host on 10.0.0.0/8 pushes us out of 10/8 entirely
  EXPECT_EQ(format_cidr(*pick_subnet({*parse_cidr("10.0.0.0/8")})), "172.29.0.0/16");
  EXPECT_FALSE(pick_subnet({*parse_cidr("0.0.0.0/1"), *parse_cidr("128.0.0.0/1")}));
}

TEST(Network, HostAddresses) {
  auto n = *parse_cidr("10.213.0.0/16");
  EXPECT_EQ(host_count(n), 65533u);  // .0.2 .. .255.254
  EXPECT_EQ(format_ipv4(nth_host(n, 0)), "10.213.0.2");
  EXPECT_EQ(format_ipv4(nth_host(n, host_count(n) - 1)), "10.213.255.254");
  EXPECT_EQ(host_count(*parse_cidr("192.168.213.0/24")), 253u);
  EXPECT_EQ(host_count(*parse_cidr("1.2.3.4/31")), 0u);
}

TEST(Network, VethName) {
  std::string id(64, 'a');
  id.replace(0, 12, "0123456789ab");
  EXPECT_EQ(veth_name(id), "rk0123456789ab");
  // not 12 alphanumerics: a hash, still within IFNAMSIZ and distinct
  EXPECT_EQ(veth_name("web").size(), 14u);
  EXPECT_NE(veth_name("web"), veth_name("db"));
  EXPECT_EQ(veth_name("my-container-name").size(), 14u);
  EXPECT_EQ(veth_name("web"), veth_name("web"));
}

TEST(Network, LoopbackNameservers) {
  for (auto a :
       {"127.0.0.53", "127.0.0.1", "127.1.2.3", "::1", "0.0.0.0", "::", "::ffff:127.0.0.1"})
    EXPECT_TRUE(is_loopback_nameserver(a)) << a;
  for (auto a : {"10.255.255.53", "8.8.8.8", "fd00::1", "fe80::1%eth0", "128.0.0.1"})
    EXPECT_FALSE(is_loopback_nameserver(a)) << a;
}

TEST(Network, ResolvConfCopiedWhenUsable) {
  std::string host = "search example.org\nnameserver 10.255.255.53\noptions ndots:2\n";
  EXPECT_EQ(resolv_conf_for(host, std::nullopt), host);
  EXPECT_EQ(resolv_conf_for(host, std::string_view("nameserver 1.1.1.1\n")), host);
}

TEST(Network, ResolvConfSystemdStub) {
  std::string stub = "nameserver 127.0.0.53\noptions edns0 trust-ad\nsearch lan\n";
  std::string upstream = "nameserver 192.168.1.1\nsearch lan\n";
  EXPECT_EQ(resolv_conf_for(stub, std::string_view(upstream)), upstream);
  // resolved's list is no better (or absent): drop the stub, keep the rest, public resolvers
  for (auto resolved : {std::optional<std::string_view>(),
                        std::optional<std::string_view>("nameserver 127.0.0.1\n")}) {
    auto out = resolv_conf_for(stub, resolved);
    EXPECT_EQ(out.find("127.0.0."), std::string::npos) << out;
    EXPECT_NE(out.find("options edns0 trust-ad\n"), std::string::npos) << out;
    EXPECT_NE(out.find("search lan\n"), std::string::npos) << out;
    EXPECT_NE(out.find("nameserver 8.8.8.8\nnameserver 8.8.4.4\n"), std::string::npos) << out;
  }
}

TEST(Network, ResolvConfMixedAndEmpty) {
  // a loopback entry next to a real one: the real one stays, nothing is added
  EXPECT_EQ(resolv_conf_for("nameserver ::1\nnameserver 10.0.0.2\n", std::nullopt),
            "nameserver 10.0.0.2\n");
  // no file, or no nameserver line: glibc would ask 127.0.0.1
  EXPECT_EQ(resolv_conf_for("", std::nullopt), "nameserver 8.8.8.8\nnameserver 8.8.4.4\n");
  auto out = resolv_conf_for("# nothing\n", std::nullopt);
  EXPECT_NE(out.find("# nothing\n"), std::string::npos) << out;
  EXPECT_NE(out.find("nameserver 8.8.8.8\n"), std::string::npos) << out;
  // "nameservers" is not a nameserver line
  EXPECT_NE(resolv_conf_for("nameservers 1.2.3.4\n", std::nullopt).find("8.8.8.8"),
            std::string::npos);
}

TEST(Network, JoinNetns) {
  nlohmann::json config = {
      {"linux", {{"namespaces", {{{"type", "pid"}}, {{"type", "network"}}, {{"type", "mount"}}}}}}};
  join_netns(config, "/run/racker-net/netns/x");
  EXPECT_EQ(config["linux"]["namespaces"][1],
            (nlohmann::json{{"type", "network"}, {"path", "/run/racker-net/netns/x"}}));
  EXPECT_EQ(config["linux"]["namespaces"].size(), 3u);
  nlohmann::json none = {{"linux", {{"namespaces", {{{"type", "pid"}}}}}}};
  join_netns(none, "/p");
  EXPECT_EQ(none["linux"]["namespaces"].size(), 2u);
  EXPECT_EQ(none["linux"]["namespaces"][1]["path"], "/p");
}

TEST(Network, NetRootIsBesideTheRuntimeRoot) {
  EXPECT_EQ(net_root("/run/racker"), "/run/racker-net");
  EXPECT_EQ(net_root("/run/racker/"), "/run/racker-net");
}

// --- leases (engine/net_leases.hpp), on a directory of the test's own ---------------------------

namespace {

std::string lease_root() {
  char tmpl[] = "/tmp/racker-net-XXXXXX";
  const char* d = ::mkdtemp(tmpl);
  return d ? d : "";
}

std::string lease_holder(const std::string& root, uint32_t addr) {
  return racker::read_file_if_exists(root + "/leases/" + format_ipv4(addr)).value_or("<none>");
}

}  // namespace

TEST(NetLeases, TakeSkipsTheGatewayAndTakenAddressesAndReleasesOnlyItsOwn) {
  std::string root = lease_root();
  ASSERT_FALSE(root.empty());
  NetLock lock(root);
  auto gateway = *parse_cidr("10.9.0.1/29");  // hosts .2 to .6
  std::set<uint32_t> taken;
  for (int i = 0; i < 5; ++i) {
    uint32_t a = take_lease(lock, root, gateway, "c" + std::to_string(i));
    EXPECT_GE(a, *parse_ipv4("10.9.0.2"));
    EXPECT_LE(a, *parse_ipv4("10.9.0.6"));
    EXPECT_EQ(lease_holder(root, a), "c" + std::to_string(i));
    taken.insert(a);
  }
  EXPECT_EQ(taken.size(), 5u);
  EXPECT_THROW(take_lease(lock, root, gateway, "c5"), racker::Error);
  uint32_t first = *taken.begin();
  std::string owner = lease_holder(root, first);
  release_lease(lock, root, first, "someone else");
  EXPECT_EQ(lease_holder(root, first), owner);
  release_lease(lock, root, first, owner);
  EXPECT_EQ(lease_holder(root, first), "<none>");
  EXPECT_EQ(take_lease(lock, root, gateway, "c5"), first);
  racker::remove_tree(root);
}

// A racker killed between taking a lease and writing its attach record left a lease that
// teardown never finds; the sweep drops it (and empty leases), keeps the leases of recorded
// containers and lists the records whose namespace is gone for teardown.
TEST(NetLeases, OrphanedLeasesAreDroppedRecordedOnesKept) {
  std::string root = lease_root();
  ASSERT_FALSE(root.empty());
  NetLock lock(root);
  auto gateway = *parse_cidr("10.9.0.1/24");
  racker::mkdir_p(root + "/leases");
  racker::write_file_atomic(root + "/leases/10.9.0.250", "");  // killed before writing the id
  uint32_t live = take_lease(lock, root, gateway, "live");
  write_attach(root, "live", {live, 24}, "rklive");
  uint32_t killed = take_lease(lock, root, gateway, "killed");  // no record
  auto record = read_attach(root, "live");
  ASSERT_TRUE(record);
  EXPECT_EQ(record->address, (Ipv4Net{live, 24}));
  EXPECT_EQ(record->veth, "rklive");

  auto dropped = drop_orphan_leases(lock, root);
  std::sort(dropped.begin(), dropped.end());
  std::vector<std::string> want = {format_ipv4(killed), "10.9.0.250"};
  std::sort(want.begin(), want.end());
  EXPECT_EQ(dropped, want);
  EXPECT_EQ(lease_holder(root, live), "live");
  EXPECT_EQ(lease_holder(root, killed), "<none>");
  // no namespace mounted under a temporary directory: "live" is teardown's to release
  EXPECT_EQ(stale_attachments(lock, root), std::vector<std::string>{"live"});
  EXPECT_TRUE(drop_orphan_leases(lock, root).empty());
  remove_attach(root, "live");
  EXPECT_FALSE(read_attach(root, "live"));
  racker::remove_tree(root);
}
