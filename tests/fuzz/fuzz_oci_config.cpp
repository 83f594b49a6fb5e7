// config.json (oci/spec.hpp): parse_spec on arbitrary text. Every problem must come out as
// racker::Error ("config.json: FIELD: problem").
#include <cstddef>
#include <cstdint>
#include <string>

#include "fuzz.hpp"
#include "oci/spec.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string text(reinterpret_cast<const char*>(data), size);
  racker::fuzz::accepts("parse_spec", [&] { (void)racker::oci::parse_spec(text); });
  return 0;
}
