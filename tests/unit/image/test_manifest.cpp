#include <gtest/gtest.h>

#include <functional>
#include <string>

#include "base/error.hpp"
#include "image/manifest.hpp"

using racker::Error;
using namespace racker::image;

namespace {

const std::string kDigest =
    "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

// The message of the racker::Error that fn throws (any other exception fails the test).
std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
    return "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.err(), EINVAL);
    return e.what();
  }
}

std::string index_with(const std::string& descriptor) {
  return R"({"manifests": [)" + descriptor + "]}";
}

}  // namespace

TEST(Manifest, ParsesManifestAndIndex) {
  Manifest m = parse_manifest(R"({"schemaVersion": 2, "config": {"digest": ")" + kDigest +
                                  R"(", "size": 7}, "layers": [{"mediaType":
                                  "application/vnd.oci.image.layer.v1.tar+gzip", "digest": ")" +
                                  kDigest + R"(", "size": 9007199254740993}]})",
                              "m");
  EXPECT_EQ(m.media_type, media::oci_manifest);
  EXPECT_EQ(m.config.size, 7);
  ASSERT_EQ(m.layers.size(), 1u);
  EXPECT_EQ(m.layers[0].size, 9007199254740993);
  Index idx = parse_index(index_with(R"({"digest": ")" + kDigest +
                                     R"(", "size": 1, "mediaType": null, "platform": {"os":
                                     "linux", "architecture": "arm64", "variant": "v8"}})"),
                          "i");
  EXPECT_EQ(idx.media_type, media::oci_index);
  ASSERT_EQ(idx.manifests.size(), 1u);
  EXPECT_EQ(idx.manifests[0].media_type, "");
  EXPECT_EQ(idx.manifests[0].platform->str(), "linux/arm64/v8");
}

// Found by tests/fuzz/fuzz_image_json: a field of the wrong type was a raw nlohmann type_error
// escaping the parser instead of racker's one-line error.
TEST(Manifest, WrongTypesAreErrors) {
  EXPECT_EQ(
      error_of([] { parse_manifest(R"({"mediaType": 1, "config": {}, "layers": []})", "m"); }),
      "m: mediaType is not a string");
  EXPECT_EQ(error_of([] { parse_index(R"({"mediaType": [], "manifests": []})", "i"); }),
            "i: mediaType is not a string");
  EXPECT_EQ(error_of([] {
              parse_manifest(R"({"schemaVersion": "2", "config": {}, "layers": []})", "m");
            }),
            "m: config: malformed descriptor: key 'digest' not found");
  EXPECT_EQ(error_of([] {
              parse_index(
                  index_with(R"({"mediaType": 5, "digest": ")" + kDigest + R"(", "size": 1})"),
                  "i");
            }),
            "i: manifests[0]: mediaType is not a string");
  EXPECT_EQ(error_of([] { parse_image_config(R"({"rootfs": {"diff_ids": [1]}})"); }),
            "image config: malformed: type must be string, but is number");
}

// Found by tests/fuzz/fuzz_image_json (UBSan): sizes and schema versions such as 1e300 were
// converted to integers with undefined behaviour; a size must be an int64.
TEST(Manifest, NumbersOutOfRangeAreErrors) {
  for (const char* size : {"1e300", "-1e300", "1.5", "18446744073709551615", "\"12\""}) {
    EXPECT_EQ(error_of([&] {
                parse_index(index_with(R"({"digest": ")" + kDigest + R"(", "size": )" + size + "}"),
                            "i");
              }),
              "i: manifests[0]: descriptor size is not a 64-bit integer")
        << size;
  }
  EXPECT_EQ(error_of([] {
              parse_index(index_with(R"({"digest": ")" + kDigest + R"(", "size": -1})"), "i");
            }),
            "i: manifests[0]: negative size in descriptor " + kDigest);
  EXPECT_EQ(error_of([] { parse_manifest(R"({"schemaVersion": 1e300, "layers": []})", "m"); }),
            "m: not an image manifest (no config or layers)");
  EXPECT_EQ(sniff_media_type(R"({"schemaVersion": 1e300})", ""), "");
  // schema1 is still recognised, as an integer or not
  EXPECT_EQ(error_of([] { parse_manifest(R"({"schemaVersion": 1.0})", "m"); }),
            "m: schema1 manifests are not supported (deprecated Docker format)");
  EXPECT_EQ(sniff_media_type(R"({"schemaVersion": 1})", "text/plain"),
            "application/vnd.docker.distribution.manifest.v1+json");
}

// Found by tests/fuzz/fuzz_image_json (ASan): an image config of 10000 nested arrays overflowed
// the stack when it was copied (json's copy recurses once per level).
TEST(Manifest, DeepNestingIsAnError) {
  auto nested = [](int levels) {
    return R"({"rootfs": {"diff_ids": []}, "x": )" + std::string(levels, '[') +
           std::string(levels, ']') + "}";
  };
  EXPECT_EQ(error_of([&] { parse_image_config(nested(10000)); }),
            "image config: JSON nested deeper than 100 levels");
  EXPECT_EQ(error_of([&] { parse_index(R"({"manifests": [], "x": )" + nested(200) + "}", "i"); }),
            "i: JSON nested deeper than 100 levels");
  EXPECT_EQ(parse_image_config(nested(90)).raw["x"].size(), 1u);
}
