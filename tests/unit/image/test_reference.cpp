#include <gtest/gtest.h>

#include <string>
#include <utility>

#include "base/error.hpp"
#include "image/reference.hpp"

using racker::Error;
using racker::image::parse_reference;
using racker::image::Reference;

namespace {

const std::string kHex = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const std::string kDigest = "sha256:" + kHex;

std::string error_of(std::string_view input) {
  try {
    Reference r = parse_reference(input);
    return "no error, got " + r.str();
  } catch (const Error& e) {
    EXPECT_EQ(e.err(), EINVAL) << input;
    return e.what();
  }
}

}  // namespace

TEST(Reference, OfficialImageWithTag) {
  Reference r = parse_reference("debian:bookworm-slim");
  EXPECT_EQ(r.registry, "docker.io");
  EXPECT_EQ(r.repository, "library/debian");
  EXPECT_EQ(r.tag, "bookworm-slim");
  EXPECT_EQ(r.digest, "");
  EXPECT_FALSE(r.registry_given);
  EXPECT_EQ(r.name(), "docker.io/library/debian");
  EXPECT_EQ(r.str(), "docker.io/library/debian:bookworm-slim");
  EXPECT_EQ(r.familiar(), "debian:bookworm-slim");
}

TEST(Reference, UserImageGetsLatest) {
  Reference r = parse_reference("opensuse/tumbleweed");
  EXPECT_EQ(r.registry, "docker.io");
  EXPECT_EQ(r.repository, "opensuse/tumbleweed");
  EXPECT_EQ(r.tag, "latest");
  EXPECT_EQ(r.str(), "docker.io/opensuse/tumbleweed:latest");
  EXPECT_EQ(r.familiar(), "opensuse/tumbleweed:latest");
}

TEST(Reference, OtherRegistry) {
  Reference r = parse_reference("registry.suse.com/bci/bci-base:15.4");
  EXPECT_EQ(r.registry, "registry.suse.com");
  EXPECT_EQ(r.repository, "bci/bci-base");
  EXPECT_EQ(r.tag, "15.4");
  EXPECT_TRUE(r.registry_given);
  EXPECT_EQ(r.str(), "registry.suse.com/bci/bci-base:15.4");
  EXPECT_EQ(r.familiar(), "registry.suse.com/bci/bci-base:15.4");
}

TEST(Reference, DigestOnlyLeavesTagEmpty) {
  Reference r = parse_reference("localhost:5000/x/y@" + kDigest);
  EXPECT_EQ(r.registry, "localhost:5000");
  EXPECT_EQ(r.repository, "x/y");
  EXPECT_EQ(r.tag, "");
  EXPECT_EQ(r.digest, kDigest);
  EXPECT_EQ(r.str(), "localhost:5000/x/y@" + kDigest);
}

TEST(Reference, TagAndDigest) {
  Reference r = parse_reference("debian:12@" + kDigest);
  EXPECT_EQ(r.tag, "12");
  EXPECT_EQ(r.digest, kDigest);
  EXPECT_EQ(r.str(), "docker.io/library/debian:12@" + kDigest);
  EXPECT_EQ(r.familiar(), "debian:12@" + kDigest);
}

TEST(Reference, DockerTransportPrefix) {
  Reference r = parse_reference("docker://localhost/foo:1");
  EXPECT_EQ(r.registry, "localhost");
  EXPECT_EQ(r.repository, "foo");
  EXPECT_EQ(r.tag, "1");
  EXPECT_TRUE(r.registry_given);
  EXPECT_EQ(parse_reference("docker://debian").str(), "docker.io/library/debian:latest");
}

TEST(Reference, LocalhostIsARegistry) {
  Reference r = parse_reference("localhost/foo");
  EXPECT_EQ(r.registry, "localhost");
  EXPECT_EQ(r.repository, "foo");  // no "library/" outside docker.io
  EXPECT_EQ(r.tag, "latest");
  EXPECT_EQ(r.str(), "localhost/foo:latest");
}

TEST(Reference, IpAndPort) {
  Reference r = parse_reference("127.0.0.1:5000/a:b");
  EXPECT_EQ(r.registry, "127.0.0.1:5000");
  EXPECT_EQ(r.repository, "a");
  EXPECT_EQ(r.tag, "b");
}

TEST(Reference, Ipv6Registry) {
  Reference r = parse_reference("[::1]:5000/foo/bar:v1");
  EXPECT_EQ(r.registry, "[::1]:5000");
  EXPECT_EQ(r.repository, "foo/bar");
  EXPECT_EQ(r.tag, "v1");
  EXPECT_EQ(parse_reference("[fe80::1]/foo").registry, "[fe80::1]");
}

TEST(Reference, DockerHubSpellings) {
  for (const char* in : {"docker.io/debian", "index.docker.io/debian", "docker.io/library/debian",
                         "index.docker.io/library/debian:latest", "library/debian"}) {
    Reference r = parse_reference(in);
    EXPECT_EQ(r.str(), "docker.io/library/debian:latest") << in;
  }
  EXPECT_TRUE(parse_reference("index.docker.io/debian").registry_given);
  EXPECT_FALSE(parse_reference("library/debian").registry_given);
  // Deeper paths under library/ keep it in the familiar form.
  EXPECT_EQ(parse_reference("library/a/b").familiar(), "library/a/b:latest");
}

TEST(Reference, FirstComponentWithoutDotOrColonIsAPath) {
  Reference r = parse_reference("myhost/foo");
  EXPECT_EQ(r.registry, "docker.io");
  EXPECT_EQ(r.repository, "myhost/foo");
}

TEST(Reference, UpperCaseAllowedInHostAndTag) {
  Reference r = parse_reference("Registry.Example.COM/foo:V1_x.y-z");
  EXPECT_EQ(r.registry, "Registry.Example.COM");
  EXPECT_EQ(r.tag, "V1_x.y-z");
}

TEST(Reference, SeparatorsInPathComponents) {
  for (const char* in : {"a.b/c_d", "a__b/c---d", "x/a-b.c_d__e/f", "x/y/z/w"})
    EXPECT_NO_THROW(parse_reference(in)) << in;
}

TEST(Reference, TagLengthLimit) {
  EXPECT_NO_THROW(parse_reference("a:" + std::string(128, 't')));
  std::string long_tag(129, 't');
  EXPECT_EQ(error_of("a:" + long_tag),
            "invalid reference \"a:" + long_tag + "\": invalid tag \"" + long_tag + "\"");
}

TEST(Reference, NameLengthLimit) {
  // "docker.io/" (10) + "library/" (8) + 237 = 255.
  EXPECT_NO_THROW(parse_reference(std::string(237, 'a')));
  std::string too_long(238, 'a');
  EXPECT_EQ(error_of(too_long), "invalid reference \"" + too_long +
                                    "\": repository name must not be more than 255 characters");
}

TEST(Reference, FamiliarRoundTrips) {
  for (const std::string& in :
       {std::string("debian:bookworm-slim"), std::string("opensuse/tumbleweed"),
        std::string("registry.suse.com/bci/bci-base:15.4"), "localhost:5000/x/y@" + kDigest,
        std::string("docker://localhost/foo:1"), std::string("localhost/foo"),
        std::string("127.0.0.1:5000/a:b"), std::string("index.docker.io/library/a/b:c"),
        "debian:12@" + kDigest, std::string("[::1]:5000/x")}) {
    Reference r = parse_reference(in);
    Reference again = parse_reference(r.familiar());
    EXPECT_EQ(again.str(), r.str()) << in;
    EXPECT_EQ(again.registry, r.registry) << in;
    EXPECT_EQ(again.repository, r.repository) << in;
    EXPECT_EQ(again.tag, r.tag) << in;
    EXPECT_EQ(again.digest, r.digest) << in;
    EXPECT_EQ(parse_reference(r.str()).str(), r.str()) << in;
  }
  EXPECT_EQ(parse_reference("docker.io/library/debian:12").familiar(), "debian:12");
}

// Found by tests/fuzz/fuzz_reference: a Docker Hub repository whose first component looks like
// a registry host ("foo.bar", "localhost") keeps docker.io in the familiar form, which otherwise
// would read back as a reference to that host.
TEST(Reference, FamiliarKeepsDockerHubBeforeAHostLikeComponent) {
  for (const char* in : {"docker.io/foo.bar/x:1", "docker.io/localhost/x"}) {
    Reference r = parse_reference(in);
    EXPECT_EQ(parse_reference(r.familiar()).str(), r.str()) << in;
  }
  EXPECT_EQ(parse_reference("docker.io/foo.bar/x:1").familiar(), "docker.io/foo.bar/x:1");
  EXPECT_EQ(parse_reference("docker.io/localhost/x").familiar(), "docker.io/localhost/x:latest");
  EXPECT_EQ(parse_reference("docker.io/library/foo.bar").familiar(), "foo.bar:latest");
  EXPECT_EQ(parse_reference("foo/bar.baz").familiar(), "foo/bar.baz:latest");
}

// Each malformed input with the reason its message gives after "invalid reference \"INPUT\": ".
TEST(Reference, Errors) {
  const std::string upper_digest = "sha256:" + std::string(64, 'A');
  const std::pair<std::string, std::string> cases[] = {
      {"Debian:x", "repository name must be lowercase"},
      {"debian:", "empty tag"},
      {"a@sha256:12", "invalid digest \"sha256:12\""},
      {"", "empty reference"},
      {"docker://", "empty reference"},
      {"a@", "empty digest"},
      {"a@md5:abc", "invalid digest \"md5:abc\""},
      {"a@" + upper_digest, "invalid digest \"" + upper_digest + "\""},
      {"a:-x", "invalid tag \"-x\""},
      {"a:b/c", "invalid registry host \"a:b\""},
      {"a:b:c", "invalid tag \"b:c\""},
      {":tag", "empty repository name"},
      {"localhost/", "empty repository name"},
      {"a//b", "empty repository name component"},
      {"a/", "empty repository name component"},
      {"foo/Bar", "repository name must be lowercase"},
      {"a/-b", "invalid repository name component \"-b\""},
      {"a_/b", "invalid repository name component \"a_\""},
      {"a___b", "invalid repository name component \"a___b\""},
      {"a..b", "invalid repository name component \"a..b\""},
      {"a b", "invalid repository name component \"a b\""},
      {"-host.com/x", "invalid registry host \"-host.com\""},
      // A first component with a '.' is a host, where '_' is not allowed.
      {"a_b.c/x", "invalid registry host \"a_b.c\""},
      {"host..com/x", "invalid registry host \"host..com\""},
      {"host.com:/x", "invalid registry host \"host.com:\""},
      {"host.com:50a/x", "invalid registry host \"host.com:50a\""},
      {"[::g]:5000/x", "invalid registry host \"[::g]:5000\""},
      {"[]:5000/x", "invalid registry host \"[]:5000\""},
      {"[]/x", "invalid repository name component \"[]\""},
      {kHex, "cannot specify 64-byte hexadecimal strings"},
  };
  for (const auto& [input, reason] : cases)
    EXPECT_EQ(error_of(input), "invalid reference \"" + input + "\": " + reason);
}
