// Image references (image/reference.hpp): parse_reference on arbitrary text, and the
// properties callers rely on: the canonical and the familiar form both parse back to the same
// reference.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "fuzz.hpp"
#include "image/reference.hpp"

using namespace racker::image;
using racker::fuzz::fail;

namespace {

void check_round_trip(const Reference& ref, const std::string& form, const char* name) {
  Reference again;
  if (!racker::fuzz::accepts(name, [&] { again = parse_reference(form); }))
    fail(std::string(name) + " form \"" + form + "\" of " + ref.str() + " does not parse");
  if (again.str() != ref.str())
    fail(std::string(name) + " form \"" + form + "\" of " + ref.str() + " parses as " +
         again.str());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view input(reinterpret_cast<const char*>(data), size);
  (void)looks_like_registry(input);
  (void)is_valid_registry_host(input);

  Reference ref;
  if (!racker::fuzz::accepts("parse_reference", [&] { ref = parse_reference(input); })) return 0;
  if (ref.registry.empty() || ref.repository.empty() || (ref.tag.empty() && ref.digest.empty()))
    fail("parse_reference(\"" + std::string(input) + "\") accepted an incomplete reference " +
         ref.str());
  if (!is_valid_registry_host(ref.registry))
    fail("parse_reference(\"" + std::string(input) + "\") gave the invalid registry " +
         ref.registry);
  check_round_trip(ref, ref.str(), "canonical");
  check_round_trip(ref, ref.familiar(), "familiar");
  return 0;
}
