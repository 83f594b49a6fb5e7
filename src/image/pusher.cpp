#include "image/pusher.hpp"

#include <algorithm>
#include <cerrno>
#include <vector>

#include "base/error.hpp"
#include "base/strings.hpp"
#include "image/auth.hpp"
#include "image/manifest.hpp"
#include "image/registries.hpp"

namespace racker::image {
namespace {

void emit(const PushOptions& o, PushEvent e) {
  if (o.on_event) o.on_event(e);
}

// The name to push to when none is given: the one the image was asked for by, when it is one
// of its names, else its only name.
Reference default_destination(const ImageRecord& rec, const std::string& input) {
  try {
    Reference asked = parse_reference(input);
    if (std::find(rec.names.begin(), rec.names.end(), asked.str()) != rec.names.end()) return asked;
  } catch (const Error&) {  // an id, not a name
  }
  if (rec.names.size() == 1) return parse_reference(rec.names[0]);
  throw Error("push " + input + ": the image has " + std::to_string(rec.names.size()) +
                  " names; give a destination",
              EINVAL);
}

}  // namespace

PushTarget push_target(const Reference& ref, const PushOptions& opts) {
  for (const PullSource& ps : pull_sources(load_registries_conf(opts.registries_conf), ref)) {
    if (ps.is_mirror) continue;  // mirrors serve pulls only
    PushTarget t;
    t.endpoint.host = ps.endpoint;
    t.endpoint.insecure = opts.tls_verify == 0 || (opts.tls_verify < 0 && ps.insecure);
    t.endpoint.tls_verify = !t.endpoint.insecure;
    t.endpoint.certs_dir =
        (opts.certs_dir.empty() ? "/etc/containers/certs.d" : opts.certs_dir) + "/" + ps.endpoint;
    t.repository = ps.repository;
    return t;
  }
  throw Error("no registry location for " + ref.str(), ENOENT);  // pull_sources always has one
}

PushResult push_image(const ContentStore& content, const ImageStore& images,
                      const std::string& image, const std::string& destination,
                      const PushOptions& opts) {
  auto rec = images.find(image);
  if (!rec) throw Error("no such image: " + printable(image), ENOENT, ErrorKind::not_found);
  Reference dest =
      destination.empty() ? default_destination(*rec, image) : parse_reference(destination);
  if (!dest.digest.empty() && dest.digest != rec->manifest_digest)
    throw Error("push " + dest.str() + ": the image's manifest is " + rec->manifest_digest +
                    ", not " + dest.digest,
                EINVAL);
  PushResult result{dest.str(), rec->manifest_digest};
  try {
    PushTarget t = push_target(dest, opts);
    RegistryClient client(t.endpoint, lookup_credentials(t.endpoint.host, opts.authfile));

    std::string body = content.read_blob(rec->manifest_digest);
    std::string media_type = sniff_media_type(body, "");
    if (is_index_media_type(media_type))
      throw Error("manifest " + rec->manifest_digest + " is an index; only image manifests push",
                  ENOTSUP);
    Manifest m = parse_manifest(body, "manifest " + rec->manifest_digest);

    // layers first, then the config, as docker and podman push them
    std::vector<std::pair<Descriptor, bool>> blobs;
    for (const auto& l : m.layers) blobs.emplace_back(l, false);
    blobs.emplace_back(m.config, true);
    for (const auto& [d, is_config] : blobs) {
      try {
        if (!content.has(d.digest)) throw Error("not in the content store", ENOENT);
        PushEvent e{PushEvent::blob_exists, d.digest, is_config, static_cast<uint64_t>(d.size)};
        if (!client.blob_exists(t.repository, d.digest)) {
          client.put_blob(t.repository, d.digest, content.blob_path(d.digest));
          e.kind = PushEvent::blob_pushed;
        }
        emit(opts, e);
      } catch (const Error& e) {
        throw e.with_context((is_config ? "config " : "blob ") + d.digest);
      }
    }
    try {
      client.put_manifest(t.repository, dest.tag.empty() ? rec->manifest_digest : dest.tag,
                          media_type, body);
    } catch (const Error& e) {
      throw e.with_context("manifest " + rec->manifest_digest);
    }
    emit(opts, {PushEvent::manifest_pushed, rec->manifest_digest, false, body.size()});
  } catch (const Error& e) {
    throw e.with_context("push " + result.destination);
  }
  return result;
}

}  // namespace racker::image
