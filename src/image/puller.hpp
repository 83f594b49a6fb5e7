// Pull: reference -> registries.conf (short names, mirrors, insecure) -> registry client
// (auth, manifest negotiation, platform) -> blobs fetched concurrently and verified -> layers
// unpacked once -> image index updated.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "image/content_store.hpp"
#include "image/image_store.hpp"

namespace racker::image {

struct PullEvent {
  enum Kind {
    resolved,
    layer_waiting,
    layer_exists,
    layer_progress,
    layer_verifying,
    layer_extracting,
    layer_done,
    done
  } kind;
  std::string id;        // short layer id (12 hex) or the reference
  uint64_t current = 0;  // bytes
  uint64_t total = 0;
  std::string text;  // e.g. the digest pulled
};

struct PullOptions {
  std::string platform;         // "" = host's
  std::string registries_conf;  // "" = default search
  std::string authfile;
  std::string certs_dir;  // "" = /etc/containers/certs.d/<host>/; else DIR/<host>/
  int tls_verify = -1;    // -1 = per registries.conf, 0 = off, 1 = on
  std::function<void(const PullEvent&)> on_event;
};

// Returns the stored record. Throws racker::Error with the context chain
// ("pull docker.io/library/debian:bookworm: fetch layer sha256:ab12..: connection reset").
ImageRecord pull_image(ContentStore& content, ImageStore& images, const std::string& input,
                       const PullOptions& opts);

}  // namespace racker::image
