// racker load, save and bake: thin wrappers over image/archive.hpp and image/bake.hpp.
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>

#include "base/error.hpp"
#include "base/strings.hpp"
#include "cli/args.hpp"
#include "cli/racker/cli_util.hpp"
#include "cli/racker/commands.hpp"
#include "engine/foreign_arch.hpp"
#include "image/archive.hpp"
#include "image/bake.hpp"
#include "image/content_store.hpp"
#include "image/image_store.hpp"
#include "image/manifest.hpp"
#include "image/reference.hpp"

namespace racker::cli {
namespace {}  // namespace

int cmd_load(const std::vector<std::string>& args, const RackerGlobals& g) {
  auto a =
      parse(args,
            {{"input", 'i', true, false, "read from FILE or an OCI layout DIR (default stdin)"},
             {"platform", 0, true, false, "from a multi-platform OCI index (default: host's)"},
             {"quiet", 'q', false, false, "print nothing"}},
            "load [-i FILE|DIR]",
            "Loads images from a docker-archive (`docker save`), an OCI archive or an OCI\n"
            "image layout directory; gzip or zstd compressed archives too.\n\n",
            0, 0);
  std::string input = a.get("input", "-");
  if ((input == "-" || input.empty()) && ::isatty(0))
    throw Error("load: no input: use -i FILE or pipe an archive into racker load", EINVAL);
  image::ContentStore content(g.root);
  image::ImageStore images(g.root);
  image::ImageArchive::Options o;
  o.platform = a.get("platform");
  o.spool_dir = g.root + "/ingest";
  auto loaded = image::load_archive(content, images, input, o);
  if (a.flag("quiet")) return 0;
  for (auto& r : loaded) {
    if (r.names.empty()) {
      out("Loaded image ID: " + r.record.id + "\n");
      continue;
    }
    for (auto& n : r.names) out("Loaded image: " + n + "\n");
  }
  return 0;
}

int cmd_save(const std::vector<std::string>& args, const RackerGlobals& g) {
  auto a = parse(args,
                 {{"output", 'o', true, false, "write to FILE (a DIR for oci-dir; default stdout)"},
                  {"format", 0, true, false, "docker-archive (default), oci-archive or oci-dir"}},
                 "save [-o FILE] [--format FORMAT] IMAGE...",
                 "Writes images to an archive. docker-archive holds uncompressed layers, as\n"
                 "`docker save` writes them; the OCI formats hold the layer blobs as stored.\n\n",
                 1, SIZE_MAX);
  image::SaveOptions o;
  o.format = image::parse_archive_format(a.get("format", "docker-archive"));
  o.output = a.get("output", "-");
  if ((o.output == "-" || o.output.empty()) && o.format != image::ArchiveFormat::oci_dir &&
      ::isatty(1))
    throw Error("save: refusing to write an archive to a terminal (use -o FILE or redirect)",
                EINVAL);
  image::ContentStore content(g.root);
  image::ImageStore images(g.root);
  image::save_images(content, images, a.positional, o);
  return 0;
}

int cmd_bake(const std::vector<std::string>& args, const RackerGlobals& g) {
  std::string distros, defaults;
  for (auto& d : image::bake_distros()) {
    distros += (distros.empty() ? "" : ", ") + std::string(d.name);
    defaults += std::string("  ") + d.name + ": default suite " + d.default_suite + "\n";
  }
  auto a =
      parse(args,
            {{"suite", 0, true, false, "release to install (bookworm, trixie, sid, noble, ...)"},
             {"variant", 0, true, false, "mmdebstrap variant (default minbase)"},
             {"include", 0, true, true, "extra packages, comma-separated (repeatable)"},
             {"mirror", 0, true, false,
              "archive URL (default: the distribution's, with its updates and security suites)"},
             {"arch", 0, true, false,
              "Debian architecture to build (arm64, armhf, ppc64el, riscv64, s390x, ...; default "
              "this machine's): foreign ones through qemu-user (qemu-user-static)"},
             {"name", 0, true, false,
              "image name (default DISTRO:SUITE, e.g. debian:bookworm; DISTRO:SUITE-ARCH for a "
              "foreign --arch)"},
             {"cache-dir", 0, true, false, "rootfs tarball cache (default <root>/bake-cache)"},
             {"quiet", 'q', false, false, "no progress output"}},
            "bake [options] DISTRO",
            "Builds an OS image from a distribution's package archive with mmdebstrap: the root\n"
            "filesystem becomes a one-layer image (Cmd /bin/bash). Rootfs tarballs are cached by\n"
            "their arguments, so baking again is fast. For a bootable image add\n"
            "--include systemd,systemd-sysv,dbus.\n\n"
            "Supported distributions: " +
                distros + " (others are not supported yet).\n" + defaults +
                "ubuntu needs the Ubuntu archive keyring (" + image::kUbuntuKeyring +
                ", package ubuntu-keyring).\n\n",
            1, 1);
  image::BakeOptions o;
  o.distro = a.positional[0];
  o.suite = a.get("suite");
  o.variant = a.get("variant", "minbase");
  for (auto& inc : a.all("include"))
    for (auto& p : split(inc, ',')) o.include.push_back(trim(p));
  o.mirror = a.get("mirror");
  o.name = a.get("name");
  o.arch = a.get("arch");
  if (!o.arch.empty()) {
    image::Platform pf = image::platform_of_debian_arch(o.arch);  // names the known ones
    if (!engine::runs_natively(pf.architecture)) {
      engine::ensure_runnable_arch(pf.architecture);
      if (o.name.empty()) {
        std::string suite = o.suite;
        if (suite.empty())
          for (auto& d : image::bake_distros())
            if (o.distro == d.name) suite = d.default_suite;
        o.name = o.distro + ":" + suite + "-" + o.arch;
      }
    }
  }
  o.cache_dir = a.get("cache-dir");
  o.quiet = a.flag("quiet");
  if (!o.quiet) o.on_status = [](const std::string& s) { std::fprintf(stderr, "%s\n", s.c_str()); };
  image::ContentStore content(g.root);
  image::ImageStore images(g.root);
  auto res = image::bake_image(content, images, o);
  out("Baked image: " + res.name + "\n");
  if (!o.quiet) out("Image ID: " + res.record.id + "\n");
  return 0;
}

}  // namespace racker::cli
