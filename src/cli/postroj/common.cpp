#include <cstdio>
#include <cstdlib>

#include "base/error.hpp"
#include "base/strings.hpp"
#include "cli/postroj/commands.hpp"
#include "image/manifest.hpp"

namespace racker::cli::postroj {

const std::vector<OptionSpec>& global_options() {
  static const std::vector<OptionSpec> specs = {
      {"store-root", 0, true, false,
       "racker's image store (default /var/lib/racker, $RACKER_ROOT; an ordinary user's "
       "~/.local/share/racker)"},
      {"state-root", 0, true, false, "runtime state of containers (default /run/racker)"},
      {"catalog", 0, true, false,
       "catalog file to use instead of the built-in one ($POSTROJ_CATALOG)"},
      {"bake-cache", 0, true, false,
       "rootfs tarball cache for baked images (default <store>/bake-cache)"},
      {"package-cache", 0, true, false,
       "downloaded packages (default /var/cache/postroj/packages; an ordinary user's "
       "~/.cache/postroj/packages)"},
      {"download-cache", 0, true, false,
       "downloaded rootfs tarballs (default /var/cache/postroj/downloads; an ordinary user's "
       "~/.cache/postroj/downloads)"},
      {"registries-conf", 0, true, false, "registries.conf for pulls"},
      {"arch", 0, true, false,
       "Debian architecture of the images (arm64, armhf, ppc64el, riscv64, s390x, ...; default "
       "this machine's): foreign ones run through qemu-user (qemu-user-static)"},
      {"quiet", 'q', false, false, "no progress lines on stderr"},
  };
  return specs;
}

void apply_globals(const ParsedArgs& a, Globals& g) {
  g.store_root = a.get("store-root", g.store_root);
  g.state_root = a.get("state-root", g.state_root);
  g.catalog = a.get("catalog", g.catalog);
  g.bake_cache = a.get("bake-cache", g.bake_cache);
  g.package_cache = a.get("package-cache", g.package_cache);
  g.registries_conf = a.get("registries-conf", g.registries_conf);
  g.download_cache = a.get("download-cache", g.download_cache);
  if (a.has("arch")) {
    g.arch = a.get("arch");
    try {
      image::platform_of_debian_arch(g.arch);
    } catch (const Error& e) {
      throw UsageError(std::string("--arch: ") + e.what());
    }
    if (g.arch == image::debian_arch_of(image::host_platform())) g.arch.clear();  // native
  }
  if (a.has("quiet")) g.quiet = a.flag("quiet");
}

void out(const std::string& s) {
  std::fwrite(s.data(), 1, s.size(), stdout);
  std::fflush(stdout);
}

ParsedArgs parse_command(const std::vector<std::string>& args, std::vector<OptionSpec> specs,
                         const std::string& usage, const std::string& description, size_t min_pos,
                         size_t max_pos, Globals& g) {
  specs.push_back({"help", 'h', false, false, "show help"});
  auto all = specs;
  all.insert(all.end(), global_options().begin(), global_options().end());
  ParsedArgs a;
  try {
    a = parse_args(args, all, false);
  } catch (const Error& e) {
    throw UsageError(std::string(e.what()) + " (see postroj " + usage.substr(0, usage.find(' ')) +
                     " --help)");
  }
  if (a.flag("help")) {
    out("usage: postroj " + usage + "\n\n" + description + "options:\n" + options_help(specs) +
        "\nglobal options:\n" + options_help(global_options()));
    std::exit(0);
  }
  if (a.positional.size() < min_pos || a.positional.size() > max_pos)
    throw UsageError("usage: postroj " + usage.substr(0, usage.find('\n')));
  apply_globals(a, g);
  return a;
}

probe::ProbeEnv probe_env(const Globals& g) {
  probe::ProbeEnv env;
  env.store_root = g.store_root;
  env.state_root = g.state_root;
  env.package_cache = g.package_cache;
  env.bake_cache = g.bake_cache;
  env.registries_conf = g.registries_conf;
  env.download_cache = g.download_cache;
  env.arch = g.arch;
  if (!g.quiet)
    env.on_status = [](const std::string& s) { std::fprintf(stderr, "postroj: %s\n", s.c_str()); };
  return env;
}

int seconds_option(const ParsedArgs& a, const std::string& name, int def) {
  if (!a.has(name)) return def;
  auto v = parse_int(a.get(name));
  if (!v || *v <= 0 || *v > 86400)
    throw UsageError("invalid --" + name + " \"" + a.get(name) + "\": want whole seconds > 0");
  return static_cast<int>(*v);
}

}  // namespace racker::cli::postroj
