// Messages built from user input: control characters escaped, nlohmann's prefixes removed.
#include <gtest/gtest.h>

#include <string>

#include "base/strings.hpp"

namespace racker {
namespace {

TEST(Printable, EscapesControlCharacters) {
  EXPECT_EQ(printable("debian:bookworm"), "debian:bookworm");
  EXPECT_EQ(printable("evil\x1b[31mred"), "evil\\x1b[31mred");
  EXPECT_EQ(printable(std::string("a\0b", 3)), "a\\x00b");
  EXPECT_EQ(printable("bell\x07\x7f"), "bell\\x07\\x7f");
  EXPECT_EQ(printable("two\nlines\t."), "two\\x0alines\\x09.");
  EXPECT_EQ(printable("caf\xc3\xa9"), "caf\xc3\xa9");  // UTF-8 stays readable
}

TEST(Printable, KeepsNewlinesOfWholeMessages) {
  EXPECT_EQ(printable("boot failed; last lines:\n  a\tb\x1b[2J", true),
            "boot failed; last lines:\n  a\tb\\x1b[2J");
}

TEST(JsonErrorText, DropsTheExceptionPrefix) {
  EXPECT_EQ(json_error_text("[json.exception.type_error.302] type must be string, but is array"),
            "type must be string, but is array");
  EXPECT_EQ(json_error_text("[json.exception.out_of_range.406] number overflow parsing '1e400'"),
            "number overflow parsing '1e400'");
  EXPECT_EQ(json_error_text("plain text"), "plain text");
}

}  // namespace
}  // namespace racker
