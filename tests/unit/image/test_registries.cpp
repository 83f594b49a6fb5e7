#include <gtest/gtest.h>
#include <stdlib.h>

#include <string>
#include <vector>

#include "base/error.hpp"
#include "base/fs.hpp"
#include "image/reference.hpp"
#include "image/registries.hpp"
#include "test_support.hpp"

using racker::Error;
using namespace racker::image;
namespace test = racker::test;

namespace {

const std::string kDigest =
    "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

RegistriesConf parse(std::string_view text) {
  return parse_registries_conf(text, "test.conf");
}

std::string parse_error(std::string_view text) {
  try {
    parse(text);
    return "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.err(), EINVAL);
    return e.what();
  }
}

// "endpoint/repository" plus markers, to compare whole source lists at a glance.
std::vector<std::string> describe(const std::vector<PullSource>& sources) {
  std::vector<std::string> out;
  for (const PullSource& s : sources)
    out.push_back(s.endpoint + "/" + s.repository + (s.insecure ? " insecure" : "") +
                  (s.is_mirror ? " mirror" : ""));
  return out;
}

std::vector<std::string> sources(const RegistriesConf& conf, std::string_view ref) {
  return describe(pull_sources(conf, parse_reference(ref)));
}

std::vector<std::string> resolve(const RegistriesConf& conf, std::string_view input) {
  std::vector<std::string> out;
  for (const Reference& r : resolve_name(conf, input)) out.push_back(r.str());
  return out;
}

using Strings = std::vector<std::string>;

}  // namespace

TEST(RegistriesConf, ParsesVersion2) {
  RegistriesConf conf = parse(R"(
unqualified-search-registries = ["registry.opensuse.org", "docker.io"]
short-name-mode = "enforcing"
credential-helpers = ["containers-auth.json"]
some-future-key = 42

[[registry]]
prefix = "docker.io"
location = "docker.io/"
unknown-registry-key = { a = 1 }

[[registry.mirror]]
location = "mirror-b.example.com:5000"
insecure = true

[[registry.mirror]]
location = "mirror-a.example.com"
pull-from-mirror = "digest-only"

[[registry]]
location = "insecure.example.com"
insecure = true

[[registry]]
location = "blocked.example.com"
blocked = true

[aliases]
"fedora" = "registry.fedoraproject.org/fedora"
"busybox" = "docker.io/busybox"
)");
  EXPECT_EQ(conf.unqualified_search_registries, (Strings{"registry.opensuse.org", "docker.io"}));
  ASSERT_EQ(conf.registries.size(), 3u);
  // Sorted by prefix.
  const RegistryConfig& blocked = conf.registries[0];
  EXPECT_EQ(blocked.prefix, "blocked.example.com");
  EXPECT_EQ(blocked.location, "blocked.example.com");
  EXPECT_TRUE(blocked.blocked);
  EXPECT_FALSE(blocked.insecure);
  const RegistryConfig& hub = conf.registries[1];
  EXPECT_EQ(hub.prefix, "docker.io");
  EXPECT_EQ(hub.location, "docker.io");  // trailing '/' dropped
  EXPECT_FALSE(hub.mirror_by_digest_only);
  ASSERT_EQ(hub.mirrors.size(), 2u);
  EXPECT_EQ(hub.mirrors[0].location, "mirror-b.example.com:5000");  // file order kept
  EXPECT_TRUE(hub.mirrors[0].insecure);
  EXPECT_EQ(hub.mirrors[0].pull_from_mirror, "");
  EXPECT_EQ(hub.mirrors[1].location, "mirror-a.example.com");
  EXPECT_FALSE(hub.mirrors[1].insecure);
  EXPECT_EQ(hub.mirrors[1].pull_from_mirror, "digest-only");
  EXPECT_EQ(conf.registries[2].prefix, "insecure.example.com");
  EXPECT_TRUE(conf.registries[2].insecure);
  // Alias targets are normalised like docker does.
  EXPECT_EQ(conf.aliases,
            (std::map<std::string, std::string>{{"busybox", "docker.io/library/busybox"},
                                                {"fedora", "registry.fedoraproject.org/fedora"}}));
}

TEST(RegistriesConf, EmptyFileIsEmptyConfig) {
  RegistriesConf conf = parse("# nothing here\n");
  EXPECT_TRUE(conf.unqualified_search_registries.empty());
  EXPECT_TRUE(conf.registries.empty());
  EXPECT_TRUE(conf.aliases.empty());
}

TEST(RegistriesConf, FirstEntryForAPrefixWins) {
  RegistriesConf conf = parse(R"(
[[registry]]
prefix = "example.com"
location = "first.example.com"
[[registry]]
prefix = "example.com"
location = "second.example.com"
)");
  ASSERT_EQ(conf.registries.size(), 1u);
  EXPECT_EQ(conf.registries[0].location, "first.example.com");
}

TEST(RegistriesConf, Version1IsConverted) {
  RegistriesConf conf = parse(R"(
[registries.search]
registries = ["registry.suse.com", "docker.io"]
[registries.insecure]
registries = ["localhost:5000", "both.example.com"]
[registries.block]
registries = ["both.example.com", "evil.example.com/"]
)");
  EXPECT_EQ(conf.unqualified_search_registries, (Strings{"registry.suse.com", "docker.io"}));
  ASSERT_EQ(conf.registries.size(), 3u);
  EXPECT_EQ(conf.registries[0].prefix, "both.example.com");
  EXPECT_TRUE(conf.registries[0].insecure);
  EXPECT_TRUE(conf.registries[0].blocked);
  EXPECT_EQ(conf.registries[1].prefix, "evil.example.com");
  EXPECT_TRUE(conf.registries[1].blocked);
  EXPECT_FALSE(conf.registries[1].insecure);
  EXPECT_EQ(conf.registries[2].location, "localhost:5000");
  EXPECT_TRUE(conf.registries[2].insecure);
  EXPECT_THROW(pull_sources(conf, parse_reference("evil.example.com/x")), Error);
  EXPECT_EQ(sources(conf, "localhost:5000/x"), (Strings{"localhost:5000/x insecure"}));
}

TEST(RegistriesConf, MalformedTomlNamesTheFile) {
  try {
    parse_registries_conf("[[registry]\nlocation = \"x\"\n", "/etc/containers/registries.conf");
    FAIL() << "no error";
  } catch (const Error& e) {
    std::string msg = e.what();
    EXPECT_EQ(msg.rfind("/etc/containers/registries.conf:1:", 0), 0u) << msg;
    EXPECT_NE(msg.find("invalid TOML"), std::string::npos) << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  }
}

TEST(RegistriesConf, WrongTypesNameFileLineAndKey) {
  EXPECT_EQ(parse_error("[[registry]]\nlocation = \"a.com\"\ninsecure = \"yes\"\n"),
            "test.conf:3: registry[0].insecure: expected a boolean, got a string");
  EXPECT_EQ(parse_error("[[registry]]\nlocation = 1\n"),
            "test.conf:2: registry[0].location: expected a string, got an integer");
  EXPECT_EQ(parse_error("[[registry]]\nlocation = \"a.com\"\n[[registry]]\nlocation = \"b.com\"\n"
                        "blocked = 1.5\n"),
            "test.conf:5: registry[1].blocked: expected a boolean, got a float");
  EXPECT_EQ(parse_error("[[registry]]\nlocation = \"a.com\"\n[[registry.mirror]]\ninsecure = 1\n"),
            "test.conf:4: registry[0].mirror[0].insecure: expected a boolean, got an integer");
  EXPECT_EQ(parse_error("unqualified-search-registries = \"docker.io\"\n"),
            "test.conf:1: unqualified-search-registries: expected an array of strings, got a "
            "string");
  EXPECT_EQ(parse_error("unqualified-search-registries = [\"docker.io\", 3]\n"),
            "test.conf:1: unqualified-search-registries[1]: expected a string, got an integer");
  EXPECT_EQ(parse_error("[registry]\nlocation = \"a.com\"\n"),
            "test.conf:1: registry: expected an array of tables ([[registry]]), got a table");
  EXPECT_EQ(parse_error("aliases = 3\n"), "test.conf:1: aliases: expected a table, got an integer");
  EXPECT_EQ(parse_error("[aliases]\nfoo = true\n"),
            "test.conf:2: aliases.\"foo\": expected a string, got a boolean");
  EXPECT_EQ(parse_error("short-name-mode = 1\n"),
            "test.conf:1: short-name-mode: expected a string, got an integer");
  EXPECT_EQ(parse_error("credential-helpers = [1]\n"),
            "test.conf:1: credential-helpers[0]: expected a string, got an integer");
  EXPECT_EQ(parse_error("[registries.search]\nregistries = \"docker.io\"\n"),
            "test.conf:2: registries.search.registries: expected an array of strings, got a "
            "string");
}

TEST(RegistriesConf, InvalidValues) {
  EXPECT_EQ(parse_error("[[registry]]\nlocation = \"https://a.com\"\n"),
            "test.conf:2: registry[0].location: invalid location \"https://a.com\": URI schemes "
            "are not supported");
  EXPECT_EQ(parse_error("[[registry]]\ninsecure = true\n"),
            "test.conf:1: registry[0]: neither location nor prefix is set");
  EXPECT_EQ(parse_error("[[registry]]\nprefix = \"a.com/x\"\n"),
            "test.conf:1: registry[0]: location is unset and prefix \"a.com/x\" is not a wildcard");
  EXPECT_EQ(parse_error("[[registry]]\nprefix = \"*.a.com/x\"\n"),
            "test.conf:2: registry[0].prefix: wildcard prefix \"*.a.com/x\" must have the form "
            "*.example.com");
  EXPECT_EQ(
      parse_error("[[registry]]\nlocation = \"a.com\"\n[[registry.mirror]]\ninsecure = true\n"),
      "test.conf:3: registry[0].mirror[0]: mirror location is unset");
  EXPECT_EQ(parse_error("[[registry]]\nlocation = \"a.com\"\n[[registry.mirror]]\n"
                        "location = \"m.com\"\npull-from-mirror = \"sometimes\"\n"),
            "test.conf:5: registry[0].mirror[0].pull-from-mirror: unsupported value \"sometimes\" "
            "(want all, digest-only or tag-only)");
  EXPECT_EQ(parse_error("[[registry]]\nlocation = \"a.com\"\nmirror-by-digest-only = true\n"
                        "[[registry.mirror]]\nlocation = \"m.com\"\npull-from-mirror = \"all\"\n"),
            "test.conf:6: registry[0].mirror[0].pull-from-mirror: cannot be combined with "
            "mirror-by-digest-only of registry \"a.com\"");
  EXPECT_EQ(parse_error("[[registry]]\nlocation = \"a.com\"\npull-from-mirror = \"all\"\n"),
            "test.conf:3: registry[0].pull-from-mirror: only allowed in a [[registry.mirror]] "
            "table");
  EXPECT_EQ(parse_error("unqualified-search-registries = [\"quay.io/ns\"]\n"),
            "test.conf:1: unqualified-search-registries[0]: invalid registry \"quay.io/ns\" (want "
            "host[:port])");
  EXPECT_EQ(parse_error("short-name-mode = \"loose\"\n"),
            "test.conf:1: short-name-mode: invalid value \"loose\"");
  EXPECT_EQ(parse_error("[[registry]]\nlocation = \"a.com\"\n[[registry]]\nprefix = \"a.com/x\"\n"
                        "location = \"a.com\"\ninsecure = true\n"),
            "test.conf: registry \"a.com\" is defined multiple times with conflicting insecure "
            "settings");
  EXPECT_EQ(parse_error("unqualified-search-registries = []\n[registries.search]\n"
                        "registries = [\"docker.io\"]\n"),
            "test.conf:2: registries: mixing the version 1 and 2 formats is not supported");
}

TEST(RegistriesConf, InvalidAliases) {
  EXPECT_EQ(parse_error("[aliases]\n\"quay.io/foo\" = \"quay.io/foo\"\n"),
            "test.conf:2: aliases.\"quay.io/foo\": alias name \"quay.io/foo\" must be a short "
            "name, without a registry");
  EXPECT_EQ(parse_error("[aliases]\n\"foo:1\" = \"quay.io/foo\"\n"),
            "test.conf:2: aliases.\"foo:1\": alias name \"foo:1\" must not have a tag or digest");
  EXPECT_EQ(parse_error("[aliases]\nfoo = \"foo/bar\"\n"),
            "test.conf:2: aliases.\"foo\": alias \"foo/bar\" must name a registry and repository");
  EXPECT_EQ(parse_error("[aliases]\nfoo = \"quay.io/foo:1\"\n"),
            "test.conf:2: aliases.\"foo\": alias \"quay.io/foo:1\" must not have a tag or digest");
  EXPECT_EQ(parse_error("[aliases]\nfoo = \"quay.io/Foo\"\n"),
            "test.conf:2: aliases.\"foo\": invalid reference \"quay.io/Foo\": repository name "
            "must be lowercase");
  EXPECT_EQ(parse_error("[aliases]\nFoo = \"quay.io/foo\"\n"),
            "test.conf:2: aliases.\"Foo\": invalid reference \"Foo\": repository name must be "
            "lowercase");
}

TEST(PullSources, NoMatchingEntryUsesTheReferenceItself) {
  RegistriesConf conf;
  EXPECT_EQ(sources(conf, "debian:12"), (Strings{"registry-1.docker.io/library/debian"}));
  EXPECT_EQ(sources(conf, "registry.suse.com/bci/bci-base:15.4"),
            (Strings{"registry.suse.com/bci/bci-base"}));
  EXPECT_EQ(sources(conf, "localhost:5000/x/y"), (Strings{"localhost:5000/x/y"}));
}

TEST(PullSources, MirrorsInOrderThenPrimary) {
  RegistriesConf conf = parse(R"(
[[registry]]
prefix = "docker.io"
location = "docker.io"
[[registry.mirror]]
location = "mirror-b.example.com:5000"
insecure = true
[[registry.mirror]]
location = "mirror-a.example.com/hub"
)");
  EXPECT_EQ(sources(conf, "debian:12"), (Strings{"mirror-b.example.com:5000/library/debian "
                                                 "insecure mirror",
                                                 "mirror-a.example.com/hub/library/debian mirror",
                                                 "registry-1.docker.io/library/debian"}));
}

TEST(PullSources, InsecurePrimary) {
  RegistriesConf conf = parse("[[registry]]\nlocation = \"localhost:5000\"\ninsecure = true\n");
  EXPECT_EQ(sources(conf, "localhost:5000/foo:1"), (Strings{"localhost:5000/foo insecure"}));
  // A host-only prefix does not match the same host on another port.
  EXPECT_EQ(sources(parse("[[registry]]\nlocation = \"localhost\"\ninsecure = true\n"),
                    "localhost:5000/foo"),
            (Strings{"localhost:5000/foo"}));
}

TEST(PullSources, PrefixRewrittenToLocation) {
  RegistriesConf conf = parse(R"(
[[registry]]
prefix = "docker.io/library"
location = "127.0.0.1:5000/lib"
insecure = true
[[registry.mirror]]
location = "mirror.example.com/cache/lib"
)");
  EXPECT_EQ(sources(conf, "debian:bookworm"), (Strings{"mirror.example.com/cache/lib/debian mirror",
                                                       "127.0.0.1:5000/lib/debian insecure"}));
  // "docker.io/opensuse/..." is outside the prefix.
  EXPECT_EQ(sources(conf, "opensuse/tumbleweed"),
            (Strings{"registry-1.docker.io/opensuse/tumbleweed"}));
  // The prefix matches at '/' boundaries only.
  EXPECT_EQ(sources(conf, "docker.io/librarything/x"),
            (Strings{"registry-1.docker.io/librarything/x"}));
}

TEST(PullSources, RewriteToDockerHub) {
  RegistriesConf conf =
      parse("[[registry]]\nprefix = \"quay.io/mirrored\"\nlocation = \"docker.io\"\n");
  EXPECT_EQ(sources(conf, "quay.io/mirrored/alpine:3"),
            (Strings{"registry-1.docker.io/library/alpine"}));
  EXPECT_EQ(sources(conf, "quay.io/mirrored/x/y"), (Strings{"registry-1.docker.io/x/y"}));
}

TEST(PullSources, ExactRepositoryPrefixWithTagAndDigest) {
  RegistriesConf conf =
      parse("[[registry]]\nprefix = \"example.com/foo\"\nlocation = \"other.com/bar\"\n");
  EXPECT_EQ(sources(conf, "example.com/foo:1"), (Strings{"other.com/bar"}));
  EXPECT_EQ(sources(conf, "example.com/foo@" + kDigest), (Strings{"other.com/bar"}));
  EXPECT_EQ(sources(conf, "example.com/foo/x"), (Strings{"other.com/bar/x"}));
  EXPECT_EQ(sources(conf, "example.com/foobar"), (Strings{"example.com/foobar"}));
}

TEST(PullSources, LongestPrefixWins) {
  RegistriesConf conf = parse(R"(
[[registry]]
prefix = "example.com/team/project"
location = "deep.example.com"
[[registry]]
location = "example.com"
insecure = true
[[registry]]
prefix = "example.com/team"
location = "team.example.com/t"
)");
  EXPECT_EQ(sources(conf, "example.com/team/project/app:1"), (Strings{"deep.example.com/app"}));
  EXPECT_EQ(sources(conf, "example.com/team/other"), (Strings{"team.example.com/t/other"}));
  EXPECT_EQ(sources(conf, "example.com/solo"), (Strings{"example.com/solo insecure"}));
}

TEST(PullSources, WildcardPrefix) {
  RegistriesConf conf = parse(R"(
[[registry]]
prefix = "*.example.com"
insecure = true
[[registry.mirror]]
location = "mirror.local"
[[registry]]
prefix = "*.deep.example.com"
blocked = true
)");
  EXPECT_EQ(sources(conf, "a.example.com/x:1"),
            (Strings{"mirror.local/x mirror", "a.example.com/x insecure"}));
  EXPECT_EQ(sources(conf, "b.a.example.com:5000/x"),
            (Strings{"mirror.local:5000/x mirror", "b.a.example.com:5000/x insecure"}));
  // The bare domain and look-alikes are not subdomains.
  EXPECT_EQ(sources(conf, "example.com/x"), (Strings{"example.com/x"}));
  EXPECT_EQ(sources(conf, "badexample.com/x"), (Strings{"badexample.com/x"}));
  EXPECT_EQ(sources(conf, "a.example.com.evil.org/x"), (Strings{"a.example.com.evil.org/x"}));
  // A path component that looks like the domain does not count.
  EXPECT_EQ(sources(conf, "quay.io/a.example.com/x"), (Strings{"quay.io/a.example.com/x"}));
  // The longer wildcard wins.
  EXPECT_THROW(pull_sources(conf, parse_reference("x.deep.example.com/y")), Error);
}

TEST(PullSources, BlockedRegistry) {
  RegistriesConf conf = parse(
      "[[registry]]\nprefix = \"docker.io/evil\"\nlocation = "
      "\"docker.io/evil\"\nblocked = true\n");
  try {
    pull_sources(conf, parse_reference("evil/image"));
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "registry \"docker.io/evil\" is blocked in registries.conf");
    EXPECT_EQ(e.err(), EACCES);
  }
  EXPECT_EQ(sources(conf, "good/image"), (Strings{"registry-1.docker.io/good/image"}));
}

TEST(PullSources, MirrorUsageRestrictions) {
  RegistriesConf conf = parse(R"(
[[registry]]
location = "a.com"
[[registry.mirror]]
location = "digest.com"
pull-from-mirror = "digest-only"
[[registry.mirror]]
location = "tag.com"
pull-from-mirror = "tag-only"
[[registry.mirror]]
location = "all.com"
pull-from-mirror = "all"

[[registry]]
location = "b.com"
mirror-by-digest-only = true
[[registry.mirror]]
location = "bmirror.com"
)");
  EXPECT_EQ(sources(conf, "a.com/x:1"),
            (Strings{"tag.com/x mirror", "all.com/x mirror", "a.com/x"}));
  EXPECT_EQ(sources(conf, "a.com/x@" + kDigest),
            (Strings{"digest.com/x mirror", "all.com/x mirror", "a.com/x"}));
  EXPECT_EQ(sources(conf, "a.com/x:1@" + kDigest),
            (Strings{"digest.com/x mirror", "all.com/x mirror", "a.com/x"}));
  EXPECT_EQ(sources(conf, "b.com/x:1"), (Strings{"b.com/x"}));
  EXPECT_EQ(sources(conf, "b.com/x@" + kDigest), (Strings{"bmirror.com/x mirror", "b.com/x"}));
}

TEST(PullSources, BadLocationIsReportedAtUse) {
  RegistriesConf conf = parse("[[registry]]\nprefix = \"a.com\"\nlocation = \"nodots\"\n");
  EXPECT_EQ(test::error_of([&] { pull_sources(conf, parse_reference("a.com/x")); }),
            "registries.conf: location \"nodots\" does not start with a registry host");
}

TEST(ResolveName, QualifiedNameIsItself) {
  RegistriesConf conf = parse("unqualified-search-registries = [\"quay.io\"]\n");
  EXPECT_EQ(resolve(conf, "registry.suse.com/bci/bci-base:15.4"),
            (Strings{"registry.suse.com/bci/bci-base:15.4"}));
  EXPECT_EQ(resolve(conf, "docker.io/debian"), (Strings{"docker.io/library/debian:latest"}));
  EXPECT_EQ(resolve(conf, "localhost/foo"), (Strings{"localhost/foo:latest"}));
}

TEST(ResolveName, EmptySearchListMeansDockerHub) {
  RegistriesConf conf;
  EXPECT_EQ(resolve(conf, "debian:bookworm-slim"),
            (Strings{"docker.io/library/debian:bookworm-slim"}));
  EXPECT_EQ(resolve(conf, "opensuse/tumbleweed"),
            (Strings{"docker.io/opensuse/tumbleweed:latest"}));
}

TEST(ResolveName, SearchRegistriesInOrder) {
  RegistriesConf conf = parse(
      "unqualified-search-registries = [\"registry.opensuse.org\", \"docker.io\", "
      "\"quay.io:443\"]\n");
  EXPECT_EQ(resolve(conf, "debian"),
            (Strings{"registry.opensuse.org/debian:latest", "docker.io/library/debian:latest",
                     "quay.io:443/debian:latest"}));
  EXPECT_EQ(resolve(conf, "library/debian:12"),
            (Strings{"registry.opensuse.org/library/debian:12", "docker.io/library/debian:12",
                     "quay.io:443/library/debian:12"}));
  EXPECT_EQ(resolve(conf, "docker://foo/bar@" + kDigest),
            (Strings{"registry.opensuse.org/foo/bar@" + kDigest, "docker.io/foo/bar@" + kDigest,
                     "quay.io:443/foo/bar@" + kDigest}));
  for (const Reference& r : resolve_name(conf, "debian")) EXPECT_TRUE(r.registry_given);
}

TEST(ResolveName, AliasWins) {
  RegistriesConf conf = parse(R"(
unqualified-search-registries = ["quay.io"]
[aliases]
"fedora" = "registry.fedoraproject.org/fedora"
"tw" = "registry.opensuse.org/opensuse/tumbleweed"
"hub/app" = "docker.io/app"
)");
  EXPECT_EQ(resolve(conf, "fedora"), (Strings{"registry.fedoraproject.org/fedora:latest"}));
  EXPECT_EQ(resolve(conf, "fedora:39"), (Strings{"registry.fedoraproject.org/fedora:39"}));
  EXPECT_EQ(resolve(conf, "tw@" + kDigest),
            (Strings{"registry.opensuse.org/opensuse/tumbleweed@" + kDigest}));
  EXPECT_EQ(resolve(conf, "hub/app:2"), (Strings{"docker.io/library/app:2"}));
  // Keyed by the name as typed: "library/fedora" is not "fedora".
  EXPECT_EQ(resolve(conf, "library/fedora"), (Strings{"quay.io/library/fedora:latest"}));
  EXPECT_EQ(resolve(conf, "other"), (Strings{"quay.io/other:latest"}));
}

TEST(ResolveName, InvalidInput) {
  RegistriesConf conf;
  EXPECT_EQ(test::error_of([&] { resolve_name(conf, "Debian:x"); }),
            "invalid reference \"Debian:x\": repository name must be lowercase");
}

class LoadRegistriesConf : public ::testing::Test {
 protected:
  void SetUp() override {
    racker::mkdir_p(root_ + "/etc/containers/registries.conf.d");
    env_.unset("RACKER_REGISTRIES_CONF");
  }
  void write(const std::string& rel, std::string_view text) {
    racker::write_file_atomic(root_ + "/" + rel, text);
  }
  std::string main_conf() const { return "etc/containers/registries.conf"; }
  std::string drop_in(const std::string& name) const {
    return "etc/containers/registries.conf.d/" + name;
  }

  test::TempDir tmp_{"racker-unit-registries"};
  const std::string root_ = tmp_.path();
  test::ScopedEnv env_;
};

TEST_F(LoadRegistriesConf, NothingPresentIsEmpty) {
  RegistriesConf conf = load_registries_conf("", root_);
  EXPECT_TRUE(conf.unqualified_search_registries.empty());
  EXPECT_TRUE(conf.registries.empty());
  EXPECT_TRUE(conf.aliases.empty());
  racker::remove_tree(root_ + "/etc");
  EXPECT_TRUE(load_registries_conf("", root_).registries.empty());
}

TEST_F(LoadRegistriesConf, DropInsOverrideInLexicalOrder) {
  write(main_conf(), R"(
unqualified-search-registries = ["registry.opensuse.org", "docker.io"]
[[registry]]
prefix = "docker.io"
location = "docker.io"
[[registry.mirror]]
location = "old-mirror.example.com"
[[registry]]
location = "keep.example.com"
insecure = true
[aliases]
"foo" = "quay.io/foo"
"bar" = "quay.io/bar"
)");
  // "10-…" sorts before "9-…": the 9 file is applied last.
  write(drop_in("10-mirror.conf"), R"(
unqualified-search-registries = ["quay.io"]
[[registry]]
prefix = "docker.io"
location = "docker.io"
[[registry.mirror]]
location = "new-mirror.example.com"
[[registry]]
location = "added.example.com"
blocked = true
[aliases]
"foo" = "quay.io/new-foo"
)");
  write(drop_in("9-search.conf"), R"(
unqualified-search-registries = ["registry.suse.com"]
[aliases]
"bar" = ""
)");
  write(drop_in("50-no-search.conf"), "[aliases]\n\"baz\" = \"quay.io/baz\"\n");
  write(drop_in("ignored.conf.bak"), "this is not toml = = =");
  racker::mkdir_p(root_ + "/" + drop_in("subdir.conf"));

  RegistriesConf conf = load_registries_conf("", root_);
  EXPECT_EQ(conf.unqualified_search_registries, (Strings{"registry.suse.com"}));
  ASSERT_EQ(conf.registries.size(), 3u);
  EXPECT_EQ(conf.registries[0].prefix, "added.example.com");
  EXPECT_TRUE(conf.registries[0].blocked);
  EXPECT_EQ(conf.registries[1].prefix, "docker.io");
  ASSERT_EQ(conf.registries[1].mirrors.size(), 1u);  // replaced, not merged
  EXPECT_EQ(conf.registries[1].mirrors[0].location, "new-mirror.example.com");
  EXPECT_EQ(conf.registries[2].prefix, "keep.example.com");
  EXPECT_TRUE(conf.registries[2].insecure);
  EXPECT_EQ(conf.aliases, (std::map<std::string, std::string>{{"baz", "quay.io/baz"},
                                                              {"foo", "quay.io/new-foo"}}));
}

TEST_F(LoadRegistriesConf, EmptySearchListInDropInStillReplaces) {
  write(main_conf(), "unqualified-search-registries = [\"quay.io\"]\n");
  write(drop_in("a.conf"), "unqualified-search-registries = []\n");
  EXPECT_TRUE(load_registries_conf("", root_).unqualified_search_registries.empty());
}

TEST_F(LoadRegistriesConf, DropInsWithoutMainFile) {
  write(drop_in("a.conf"), "unqualified-search-registries = [\"quay.io\"]\n");
  EXPECT_EQ(load_registries_conf("", root_).unqualified_search_registries, (Strings{"quay.io"}));
}

TEST_F(LoadRegistriesConf, DropInMustBeVersion2) {
  write(main_conf(), "[registries.search]\nregistries = [\"docker.io\"]\n");
  EXPECT_EQ(load_registries_conf("", root_).unqualified_search_registries, (Strings{"docker.io"}));
  write(drop_in("a.conf"), "[registries.search]\nregistries = [\"quay.io\"]\n");
  EXPECT_EQ(test::error_of([&] { load_registries_conf("", root_); }),
            root_ + "/" + drop_in("a.conf") +
                ":1: registries: drop-in files must use the version 2 format");
}

TEST_F(LoadRegistriesConf, ErrorsNameTheFile) {
  write(main_conf(), "unqualified-search-registries = [\"quay.io\"\n");
  try {
    load_registries_conf("", root_);
    FAIL() << "no error";
  } catch (const Error& e) {
    std::string msg = e.what();
    EXPECT_EQ(msg.rfind(root_ + "/" + main_conf() + ":", 0), 0u) << msg;
  }
}

TEST_F(LoadRegistriesConf, OverridePathIsTheOnlyFile) {
  write(main_conf(), "unqualified-search-registries = [\"from-main.example.com\"]\n");
  write(drop_in("a.conf"), "[aliases]\nfoo = \"quay.io/foo\"\n");
  write("custom.conf", "unqualified-search-registries = [\"custom.example.com\"]\n");
  RegistriesConf conf = load_registries_conf(root_ + "/custom.conf", root_);
  EXPECT_EQ(conf.unqualified_search_registries, (Strings{"custom.example.com"}));
  EXPECT_TRUE(conf.aliases.empty());

  // The environment variable comes next, below an explicit override.
  write("env.conf", "unqualified-search-registries = [\"env.example.com\"]\n");
  setenv("RACKER_REGISTRIES_CONF", (root_ + "/env.conf").c_str(), 1);
  EXPECT_EQ(load_registries_conf("", root_).unqualified_search_registries,
            (Strings{"env.example.com"}));
  EXPECT_EQ(load_registries_conf(root_ + "/custom.conf", root_).unqualified_search_registries,
            (Strings{"custom.example.com"}));
  EXPECT_EQ(load_registries_conf(root_ + "/custom.conf").unqualified_search_registries,
            (Strings{"custom.example.com"}));
}

TEST_F(LoadRegistriesConf, MissingOverrideIsAnError) {
  std::string missing = root_ + "/missing.conf";
  try {
    load_registries_conf(missing, root_);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.err(), ENOENT);
    EXPECT_NE(std::string(e.what()).find(missing), std::string::npos) << e.what();
  }
  setenv("RACKER_REGISTRIES_CONF", missing.c_str(), 1);
  EXPECT_THROW(load_registries_conf("", root_), Error);
}
