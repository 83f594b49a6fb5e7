// -p specs as docker takes them, and what ps shows of them.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "base/error.hpp"
#include "engine/ports.hpp"

namespace racker::engine {
namespace {

std::vector<std::string> described(const std::string& spec) {
  std::vector<std::string> out;
  for (auto& m : parse_publish(spec)) out.push_back(describe(m));
  return out;
}

TEST(Publish, DockersForms) {
  EXPECT_EQ(described("80"), std::vector<std::string>{"0.0.0.0:0->80/tcp"});
  EXPECT_EQ(described("8080:80"), std::vector<std::string>{"0.0.0.0:8080->80/tcp"});
  EXPECT_EQ(described("127.0.0.1:8080:80/udp"), std::vector<std::string>{"127.0.0.1:8080->80/udp"});
  EXPECT_EQ(described("127.0.0.1::80"), std::vector<std::string>{"127.0.0.1:0->80/tcp"});
  EXPECT_EQ(described("0.0.0.0:53:53/udp"), std::vector<std::string>{"0.0.0.0:53->53/udp"});
  EXPECT_EQ(parse_publish("0.0.0.0:53:53")[0].host_ip, "");  // every address, as ""
}

TEST(Publish, RangesPairUp) {
  EXPECT_EQ(described("8000-8002:80-82"),
            (std::vector<std::string>{"0.0.0.0:8000->80/tcp", "0.0.0.0:8001->81/tcp",
                                      "0.0.0.0:8002->82/tcp"}));
  EXPECT_EQ(described("80-81"),
            (std::vector<std::string>{"0.0.0.0:0->80/tcp", "0.0.0.0:0->81/tcp"}));
}

TEST(Publish, BadSpecsNameWhatIsWrong) {
  auto why = [](const std::string& spec) {
    try {
      parse_publish(spec);
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::invalid) << spec;
      return std::string(e.what());
    }
    return std::string("accepted");
  };
  EXPECT_NE(why("").find("use [IP:]"), std::string::npos);
  EXPECT_NE(why("x").find("\"x\" is not a port"), std::string::npos);
  EXPECT_NE(why("0").find("is not a port"), std::string::npos);
  EXPECT_NE(why("65536").find("is not a port"), std::string::npos);
  EXPECT_NE(why("80:").find("is not a port"), std::string::npos);
  EXPECT_NE(why("90-80").find("runs backwards"), std::string::npos);
  EXPECT_NE(why("8000-8001:80").find("differ in length"), std::string::npos);
  EXPECT_NE(why("80/sctp").find("not tcp or udp"), std::string::npos);
  EXPECT_NE(why("300.1.1.1:80:80").find("not an IPv4 address"), std::string::npos);
  EXPECT_NE(why("[::1]:80:80").find("IPv6"), std::string::npos);
  EXPECT_NE(why("1-5000").find("more than 4096 ports"), std::string::npos);
  EXPECT_NE(why("a:b:c:d").find("invalid -p \"a:b:c:d\""), std::string::npos);
}

TEST(Publish, RoundTripsThroughJson) {
  PortMapping m{"127.0.0.1", 8080, 80, "udp"};
  EXPECT_EQ(PortMapping::from_json(nlohmann::json::parse(m.to_json().dump())), m);
  EXPECT_EQ(PortMapping::from_json(nlohmann::json("junk")), PortMapping{});
}

}  // namespace
}  // namespace racker::engine
