#include "image/puller.hpp"

#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <exception>
#include <mutex>
#include <thread>

#include "base/error.hpp"
#include "image/auth.hpp"
#include "image/digest.hpp"
#include "image/gc.hpp"
#include "image/importer.hpp"
#include "image/manifest.hpp"
#include "image/reference.hpp"
#include "image/registries.hpp"
#include "image/registry_client.hpp"

namespace racker::image {
namespace {

struct Source {
  Endpoint endpoint;
  std::string repository;
  Credentials creds;
};

std::string short_id(const std::string& digest) {
  return digest.substr(7, 12);
}

void emit(const PullOptions& o, PullEvent e) {
  if (o.on_event) o.on_event(e);
}

// Fetches one blob into the content store unless it is already there.
void fetch_blob(ContentStore& content, const Source& src, const Descriptor& d,
                const std::function<void(uint64_t)>& progress) {
  auto ingest = content.begin_ingest(d.digest, d.size);
  if (!ingest) return;
  RegistryClient client(src.endpoint, src.creds);
  uint64_t done = ingest->offset();
  client.get_blob(src.repository, d.digest, d.size, *ingest, [&](const char*, size_t n) {
    done += n;
    if (progress) progress(done);
  });
  ingest->commit();
}

}  // namespace

ImageRecord pull_image(ContentStore& content, ImageStore& images, const std::string& input,
                       const PullOptions& opts) {
  RegistriesConf conf = load_registries_conf(opts.registries_conf);
  Platform want = opts.platform.empty() ? host_platform() : parse_platform(opts.platform);
  std::string last_error;
  Lease lease(images.root());  // what we fetch and unpack is ours until the image record is
  for (const Reference& ref : resolve_name(conf, input)) {
    std::string refstr = ref.str();
    try {
      // manifest: mirrors first, then the primary location
      std::optional<Source> src;
      FetchedManifest fm;
      std::string tried;
      for (auto& ps : pull_sources(conf, ref)) {
        Source s;
        s.endpoint.host = ps.endpoint;
        s.endpoint.insecure = ps.insecure || opts.tls_verify == 0;
        s.endpoint.tls_verify = opts.tls_verify == 0 ? false : !ps.insecure;
        s.endpoint.certs_dir =
            (opts.certs_dir.empty() ? "/etc/containers/certs.d" : opts.certs_dir) + "/" +
            ps.endpoint;
        s.repository = ps.repository;
        std::string host = ps.endpoint.substr(0, ps.endpoint.find('/'));
        s.creds = lookup_credentials(host, opts.authfile);
        try {
          RegistryClient client(s.endpoint, s.creds);
          fm = client.get_manifest(s.repository, ref.digest.empty() ? ref.tag : ref.digest);
          src = s;
          break;
        } catch (const Error& e) {
          tried += std::string(tried.empty() ? "" : "; ") + e.what();
          if (!ps.is_mirror) throw Error(tried, e.err());
        }
      }
      if (!src) throw Error(tried.empty() ? "no source to pull from" : tried, ENOENT);
      std::string media_type = sniff_media_type(fm.body, fm.media_type);
      std::string manifest_digest = fm.digest;
      if (is_index_media_type(media_type)) {
        Index idx = parse_index(fm.body, "index " + fm.digest);
        const Descriptor& d = select_platform(idx, want, refstr);
        RegistryClient client(src->endpoint, src->creds);
        fm = client.get_manifest(src->repository, d.digest);
        manifest_digest = d.digest;
        media_type = sniff_media_type(fm.body, fm.media_type);
      }
      Manifest m = parse_manifest(fm.body, "manifest " + manifest_digest);
      {
        std::vector<std::string> refs = {manifest_digest, m.config.digest};
        for (auto& l : m.layers) refs.push_back(l.digest);
        lease.add(refs);
      }
      content.put_blob(fm.body, manifest_digest);
      emit(opts, {PullEvent::resolved, refstr, 0, 0, manifest_digest});

      if (!content.has(m.config.digest)) fetch_blob(content, *src, m.config, nullptr);
      ImageConfig cfg = parse_image_config(content.read_blob(m.config.digest));
      ImageRecord rec = make_image_record(m, manifest_digest, cfg, want);
      {
        std::vector<std::string> chains;
        for (auto& l : rec.layers) chains.push_back(l.chain_id);
        lease.add(chains);
      }

      // layers concurrently: each thread fetches (unless stored) and unpacks (unless done)
      std::vector<std::thread> threads;
      std::mutex mu;
      std::exception_ptr failure;
      for (size_t i = 0; i < rec.layers.size(); ++i) {
        const LayerRecord& l = rec.layers[i];
        const Descriptor& d = m.layers[i];
        if (images.layer_complete(l.chain_id)) {
          emit(opts, {PullEvent::layer_exists, short_id(l.digest), 0, l.size, ""});
          continue;
        }
        emit(opts, {PullEvent::layer_waiting, short_id(l.digest), 0, l.size, ""});
        threads.emplace_back([&, l, d, i] {
          try {
            try {
              fetch_blob(content, *src, d, [&](uint64_t done) {
                emit(opts, {PullEvent::layer_progress, short_id(l.digest), done, l.size, ""});
              });
              emit(opts, {PullEvent::layer_extracting, short_id(l.digest), l.size, l.size, ""});
              auto unpack = [&] { unpack_stored_layer(content, images, rec, i); };
              try {
                unpack();
              } catch (const Error& e) {
                // a hardlink into a lower layer that is still being unpacked: wait for the
                // lower layers, then once more
                if (e.err() != ENOENT || i == 0) throw;
                for (;;) {
                  bool ready = true;
                  for (size_t k = 0; k < i; ++k)
                    ready = ready && images.layer_complete(rec.layers[k].chain_id);
                  if (ready) break;
                  {
                    std::lock_guard<std::mutex> g(mu);
                    if (failure) throw;
                  }
                  std::this_thread::sleep_for(std::chrono::milliseconds(20));
                }
                unpack();
              }
              emit(opts, {PullEvent::layer_done, short_id(l.digest), l.size, l.size, ""});
            } catch (const Error& e) {
              throw e.with_context("layer " + l.digest);
            }
          } catch (...) {
            std::lock_guard<std::mutex> g(mu);
            if (!failure) failure = std::current_exception();
          }
        });
      }
      for (auto& t : threads) t.join();
      if (failure) std::rethrow_exception(failure);
      fix_up_layers(images, rec);
      images.put(rec, refstr);
      emit(opts, {PullEvent::done, refstr, rec.size, rec.size, manifest_digest});
      auto stored = images.find(refstr);
      return stored ? *stored : rec;
    } catch (const Error& e) {
      last_error = Error(e).with_context("pull " + refstr).what();
      // a short name tries the next search registry only when this one lacked the image
      if (ref.registry_given) throw Error(last_error, e.err());
    }
  }
  throw Error(last_error.empty() ? "pull " + input + ": no candidates" : last_error, ENOENT);
}

}  // namespace racker::image
