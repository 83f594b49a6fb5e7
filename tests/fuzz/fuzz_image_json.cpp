// Registry JSON (image/manifest.hpp): every input goes through the manifest, index and image
// config parsers (one corpus serves all three: they share the descriptor code), the media type
// sniffing, and platform selection on an accepted index.
#include <cstddef>
#include <cstdint>
#include <string>

#include "fuzz.hpp"
#include "image/manifest.hpp"

using namespace racker::image;
using racker::fuzz::accepts;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string body(reinterpret_cast<const char*>(data), size);

  accepts("sniff_media_type", [&] {
    (void)sniff_media_type(body, "");
    (void)sniff_media_type(body, "application/json; charset=utf-8");
  });

  accepts("parse_manifest", [&] {
    Manifest m = parse_manifest(body, "manifest sha256:fuzz");
    for (const Descriptor& layer : m.layers) (void)layer_compression(layer.media_type);
  });

  Index index;
  if (accepts("parse_index", [&] { index = parse_index(body, "index sha256:fuzz"); })) {
    static const Platform kWanted[] = {
        host_platform(), parse_platform("linux/arm64"), parse_platform("linux/arm64/v8"),
        parse_platform("linux/arm/v7"), parse_platform("windows/amd64")};
    for (const Platform& p : kWanted)
      accepts("select_platform", [&] { (void)select_platform(index, p, "fuzz"); });
  }

  accepts("parse_image_config", [&] { (void)parse_image_config(body); });
  // Platform strings come from the command line, but the parser is cheap to cover here too.
  if (size < 64) accepts("parse_platform", [&] { (void)parse_platform(body); });
  return 0;
}
