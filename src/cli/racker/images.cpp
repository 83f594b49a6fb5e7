// racker's image commands: thin wrappers over image/ that parse, call and print.
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <set>

#include <nlohmann/json.hpp>

#include "base/error.hpp"
#include "base/strings.hpp"
#include "cli/args.hpp"
#include "cli/racker/cli_util.hpp"
#include "cli/racker/commands.hpp"
#include "cli/racker/progress.hpp"
#include "engine/containers.hpp"
#include "image/content_store.hpp"
#include "image/gc.hpp"
#include "image/image_store.hpp"
#include "image/puller.hpp"
#include "image/reference.hpp"

namespace racker::cli {
namespace {

std::string human_size(uint64_t b) {
  char buf[32];
  if (b >= 1000 * 1000 * 1000)
    std::snprintf(buf, sizeof buf, "%.2fGB", static_cast<double>(b) / 1e9);
  else if (b >= 1000 * 1000)
    std::snprintf(buf, sizeof buf, "%.1fMB", static_cast<double>(b) / 1e6);
  else
    std::snprintf(buf, sizeof buf, "%.1fkB", static_cast<double>(b) / 1e3);
  return buf;
}

}  // namespace

int cmd_pull(const std::vector<std::string>& args, const RackerGlobals& g) {
  auto a = parse(args,
                 {{"platform", 0, true, false, "os/arch[/variant] (default: this host's)"},
                  {"quiet", 'q', false, false, "print only the image digest"},
                  {"tls-verify", 0, true, false, "verify TLS certificates (default true)"}},
                 "pull [options] IMAGE", 1, 1);
  image::ContentStore content(g.root);
  image::ImageStore images(g.root);
  PullProgress::Mode mode = a.flag("quiet")    ? PullProgress::Mode::quiet
                            : ::isatty(1) != 0 ? PullProgress::Mode::tty
                                               : PullProgress::Mode::plain;
  PullProgress progress(mode);
  image::PullOptions o;
  o.platform = a.get("platform");
  o.registries_conf = g.registries_conf;
  o.authfile = g.authfile;
  o.certs_dir = g.certs_dir;
  if (a.has("tls-verify")) o.tls_verify = a.flag("tls-verify") ? 1 : 0;
  o.on_event = [&](const image::PullEvent& e) { progress.on_event(e); };
  auto rec = image::pull_image(content, images, a.positional[0], o);
  if (a.flag("quiet")) out(rec.manifest_digest + "\n");
  return 0;
}

int cmd_images(const std::vector<std::string>& args, const RackerGlobals& g) {
  auto a = parse(args,
                 {{"format", 0, true, false, "table or json"},
                  {"quiet", 'q', false, false, "print only image ids"}},
                 "images [options]", 0, 0);
  image::ImageStore images(g.root);
  auto all = images.list();
  std::string fmt = a.get("format", "table");
  if (a.flag("quiet")) {
    for (auto& r : all) out(r.id.substr(7, 12) + "\n");
    return 0;
  }
  if (fmt == "json") {
    nlohmann::json arr = nlohmann::json::array();
    for (auto& r : all)
      arr.push_back({{"Id", r.id},
                     {"Names", r.names},
                     {"Digest", r.manifest_digest},
                     {"Platform", r.platform},
                     {"Created", r.created},
                     {"Size", r.size},
                     {"Layers", r.layers.size()}});
    out(arr.dump(2) + "\n");
    return 0;
  }
  if (fmt != "table") throw Error("invalid --format \"" + fmt + "\": use table or json", EINVAL);
  char line[512];
  std::snprintf(line, sizeof line, "%-50s %-20s %-14s %-22s %s\n", "REPOSITORY", "TAG", "IMAGE ID",
                "CREATED", "SIZE");
  out(line);
  for (auto& r : all) {
    for (auto& n : r.names) {
      auto ref = image::parse_reference(n);
      std::snprintf(line, sizeof line, "%-50s %-20s %-14s %-22s %s\n", ref.name().c_str(),
                    ref.tag.empty() ? "<none>" : ref.tag.c_str(), r.id.substr(7, 12).c_str(),
                    r.created.substr(0, 19).c_str(), human_size(r.size).c_str());
      out(line);
    }
  }
  return 0;
}

int cmd_rmi(const std::vector<std::string>& args, const RackerGlobals& g) {
  auto a = parse(args, {{"force", 'f', false, false, "remove every name of the image"}},
                 "rmi [options] IMAGE...", 1, SIZE_MAX);
  image::ContentStore content(g.root);
  image::ImageStore images(g.root);
  int rc = 0;
  for (auto& name : a.positional) {
    try {
      auto rec = images.find(name);
      if (!rec) throw Error("no such image: " + printable(name), ENOENT, ErrorKind::not_found);
      bool by_id =
          rec->id.substr(7).starts_with(name.starts_with("sha256:") ? name.substr(7) : name);
      if (by_id || rec->names.size() <= 1) {
        // the image would go, and with it the layers under a container's rootfs (docker
        // refuses this too): the container has to go first
        for (auto& c : engine::ContainerStore(g.root).list())
          if (c.rec.image_id == rec->id)
            throw Error("unable to remove image " + name + ": container " + c.name() + " (" +
                            c.id.substr(0, 12) + ") uses it; remove the container first",
                        EBUSY);
      }
      if (by_id) {
        if (rec->names.size() > 1 && !a.flag("force"))
          throw Error("image " + name + " has several names; use --force or remove them by name",
                      EBUSY);
        images.remove(rec->id);
        for (auto& n : rec->names) out("Untagged: " + n + "\n");
      } else {
        images.untag(name);
        out("Untagged: " + name + "\n");
        if (images.find(rec->id.substr(7))) continue;
      }
      out("Deleted: " + rec->id + "\n");
    } catch (const Error& e) {
      std::fprintf(stderr, "racker: %s\n", printable(e.what(), true).c_str());
      rc = 1;
    }
  }
  image::collect_garbage(content, images);
  return rc;
}

int cmd_tag(const std::vector<std::string>& args, const RackerGlobals& g) {
  auto a = parse(args, {}, "tag SOURCE TARGET", 2, 2);
  image::ImageStore images(g.root);
  auto rec = images.find(a.positional[0]);
  if (!rec)
    throw Error("no such image: " + printable(a.positional[0]), ENOENT, ErrorKind::not_found);
  auto target = image::parse_reference(a.positional[1]);
  if (!target.digest.empty()) throw Error("cannot tag with a digest: " + a.positional[1], EINVAL);
  images.put(*rec, target.str());
  return 0;
}

int cmd_image_inspect(const std::vector<std::string>& args, const RackerGlobals& g) {
  auto a = parse(args, {}, "image inspect IMAGE...", 1, SIZE_MAX);
  image::ContentStore content(g.root);
  image::ImageStore images(g.root);
  nlohmann::json arr = nlohmann::json::array();
  for (auto& name : a.positional) {
    auto rec = images.find(name);
    if (!rec) throw Error("no such image: " + printable(name), ENOENT, ErrorKind::not_found);
    auto config = nlohmann::json::parse(content.read_blob(rec->config_digest));
    nlohmann::json layers = nlohmann::json::array();
    for (auto& l : rec->layers)
      layers.push_back({{"Digest", l.digest},
                        {"DiffID", l.diff_id},
                        {"Size", l.size},
                        {"Path", images.layer_dir(l.chain_id) + "/fs"}});
    arr.push_back({{"Id", rec->id},
                   {"RepoTags", rec->names},
                   {"Digest", rec->manifest_digest},
                   {"Platform", rec->platform},
                   {"Created", config.value("created", "")},
                   {"Config", config.value("config", nlohmann::json::object())},
                   {"Layers", layers},
                   {"Size", rec->size}});
  }
  out(arr.dump(2) + "\n");
  return 0;
}

int cmd_image_prune(const std::vector<std::string>& args, const RackerGlobals& g) {
  parse(args, {}, "image prune", 0, 0);
  image::ContentStore content(g.root);
  image::ImageStore images(g.root);
  image::collect_garbage(content, images);
  return 0;
}

}  // namespace racker::cli
