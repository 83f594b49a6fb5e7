#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace racker {

std::vector<std::string> split(std::string_view s, char sep);
bool starts_with(std::string_view s, std::string_view prefix);
// Strict decimal parse of the whole string; nullopt on any junk or overflow.
std::optional<int64_t> parse_int(std::string_view s);
std::optional<uint64_t> parse_uint(std::string_view s);
std::string trim(std::string_view s);
// n random lower-case hex digits (container ids, names, machine ids).
std::string random_hex(size_t n);
// s for a message: control characters (and DEL) as \xNN, so that user input echoed in an
// error can neither move the cursor nor recolour the terminal. keep_newlines: \n and \t stay
// (for whole messages that have several lines).
std::string printable(std::string_view s, bool keep_newlines = false);
// nlohmann::json's exception text without its "[json.exception.type_error.302] " prefix.
std::string json_error_text(std::string_view what);

}  // namespace racker
