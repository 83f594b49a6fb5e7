// Push: a stored image (its layer blobs, config and manifest, byte for byte as the content store
// has them, so the manifest digest survives) -> the destination's primary registries.conf
// location (never a mirror) -> blobs the registry lacks uploaded -> manifest put under the tag.
// It reads the stores and never writes to them.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "image/content_store.hpp"
#include "image/image_store.hpp"
#include "image/reference.hpp"
#include "image/registry_client.hpp"

namespace racker::image {

struct PushEvent {
  enum Kind { blob_exists, blob_pushed, manifest_pushed } kind;
  std::string digest;
  bool is_config = false;
  uint64_t size = 0;
};

struct PushOptions {
  std::string registries_conf;  // "" = default search
  std::string authfile;
  std::string certs_dir;  // "" = /etc/containers/certs.d/<host>/; else DIR/<host>/
  int tls_verify = -1;    // -1 = per registries.conf, 0 = off, 1 = on
  std::function<void(const PushEvent&)> on_event;
};

// Where a push of ref goes, and where `racker login` to ref's registry checks credentials:
// the primary location of ref's registries.conf entry (never a mirror), with its insecure flag
// unless opts.tls_verify overrides it, and its certs.d directory.
struct PushTarget {
  Endpoint endpoint;
  std::string repository;  // after registries.conf prefix rewriting
};
PushTarget push_target(const Reference& ref, const PushOptions& opts);

struct PushResult {
  std::string destination;  // canonical reference pushed to
  std::string manifest_digest;
};

// Pushes the image named `image` (any name or id ImageStore::find accepts) to `destination`,
// or to the name it was given when destination is "" (an image found by id must have exactly
// one name then). Throws racker::Error with the context chain
// ("push 127.0.0.1:5000/x/y:1: blob sha256:ab12..: POST ...: 401 unauthorized: ...").
PushResult push_image(const ContentStore& content, const ImageStore& images,
                      const std::string& image, const std::string& destination,
                      const PushOptions& opts);

}  // namespace racker::image
