// racker's registry commands: login, logout and push. Thin wrappers over image/ that parse,
// call and print; credentials only ever go to the auth file, never to the terminal or logs.
#include <termios.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <string>

#include <nlohmann/json.hpp>

#include "base/error.hpp"
#include "base/fs.hpp"
#include "cli/args.hpp"
#include "cli/racker/cli_util.hpp"
#include "cli/racker/commands.hpp"
#include "image/auth.hpp"
#include "image/content_store.hpp"
#include "image/image_store.hpp"
#include "image/pusher.hpp"
#include "image/reference.hpp"
#include "image/registry_client.hpp"

namespace racker::cli {
namespace {

int tls_verify_option(const ParsedArgs& a) {
  return a.has("tls-verify") ? (a.flag("tls-verify") ? 1 : 0) : -1;
}

// The key credentials are stored under: "host[:port]", with docker's aliases and URL forms
// ("https://index.docker.io/v1/") folded into "docker.io".
std::string registry_host(const std::string& input) {
  std::string_view s = input;
  bool url = false;
  for (std::string_view scheme : {"https://", "http://"}) {
    if (s.starts_with(scheme)) {
      s.remove_prefix(scheme.size());
      url = true;
    }
  }
  if (url) s = s.substr(0, s.find('/'));
  std::string host(s);
  if (!image::is_valid_registry_host(host))
    throw Error("invalid registry \"" + input + "\": credentials are kept per host[:port]", EINVAL);
  if (host == "index.docker.io" || host == "registry-1.docker.io") host = image::kDockerHub;
  return host;
}

// Reads one line from the terminal on stdin, without echo when secret.
std::string prompt(const char* label, const char* noun, bool secret) {
  if (::isatty(0) == 0)
    throw Error(std::string("login: no ") + noun + " given (and stdin is not a terminal)", EINVAL);
  std::fprintf(stderr, "%s: ", label);
  std::fflush(stderr);
  termios saved{};
  bool restore = secret && ::tcgetattr(0, &saved) == 0;
  if (restore) {
    termios quiet = saved;
    quiet.c_lflag &= ~static_cast<tcflag_t>(ECHO);
    ::tcsetattr(0, TCSAFLUSH, &quiet);
  }
  std::string line;
  bool got = static_cast<bool>(std::getline(std::cin, line));
  if (restore) {
    ::tcsetattr(0, TCSAFLUSH, &saved);
    std::fputc('\n', stderr);
  }
  if (!got) throw Error(std::string("login: no ") + noun + " given", EINVAL);
  return line;
}

// --password-stdin: everything on stdin, without the trailing newline.
std::string read_stdin() {
  std::string data;
  char buf[4096];
  for (;;) {
    ssize_t n = ::read(0, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw_errno("read password from stdin");
    if (n == 0) break;
    data.append(buf, static_cast<size_t>(n));
  }
  while (!data.empty() && (data.back() == '\n' || data.back() == '\r')) data.pop_back();
  return data;
}

// Every key of the "auths" object of the primary auth file.
std::vector<std::string> stored_registries(const std::string& authfile) {
  std::string path = image::primary_auth_file(authfile);
  auto text = read_file_if_exists(path);
  if (!text || text->find_first_not_of(" \t\r\n") == std::string::npos) return {};
  auto j = nlohmann::json::parse(*text, nullptr, false);
  if (!j.is_object()) throw Error("parse " + path + ": not a valid JSON object", EINVAL);
  std::vector<std::string> keys;
  if (auto auths = j.find("auths"); auths != j.end() && auths->is_object())
    for (const auto& [k, v] : auths->items()) keys.push_back(k);
  return keys;
}

}  // namespace

int cmd_login(const std::vector<std::string>& args, const RackerGlobals& g) {
  auto a = parse(args,
                 {{"username", 'u', true, false, "user name"},
                  {"password", 'p', true, false,
                   "password (visible to other users: prefer "
                   "--password-stdin)"},
                  {"password-stdin", 0, false, false, "read the password from stdin"},
                  {"tls-verify", 0, true, false, "verify TLS certificates (default true)"}},
                 "login [options] REGISTRY", 1, 1);
  std::string host = registry_host(a.positional[0]);
  if (a.has("password") && a.flag("password-stdin"))
    throw Error("login: --password and --password-stdin are mutually exclusive", EINVAL);
  if (a.flag("password-stdin") && !a.has("username"))
    throw Error("login: --password-stdin needs --username", EINVAL);
  image::Credentials creds;
  creds.username = a.has("username") ? a.get("username") : prompt("Username", "username", false);
  if (creds.username.empty()) throw Error("login: empty username", EINVAL);
  if (creds.username.find(':') != std::string::npos)
    throw Error("login: the username must not contain ':'", EINVAL);
  creds.password = a.flag("password-stdin") ? read_stdin()
                   : a.has("password")      ? a.get("password")
                                            : prompt("Password", "password", true);
  if (creds.password.empty()) throw Error("login: empty password", EINVAL);

  image::PushOptions o;
  o.registries_conf = g.registries_conf;
  o.certs_dir = g.certs_dir;
  o.tls_verify = tls_verify_option(a);
  image::Reference probe;  // only the registry counts: its registries.conf entry, its endpoint
  probe.registry = host;
  probe.repository = host == image::kDockerHub ? "library/racker" : "racker";
  probe.tag = "latest";
  probe.registry_given = true;
  try {
    auto target = image::push_target(probe, o);
    image::RegistryClient client(target.endpoint, creds);
    client.check_login();
  } catch (const Error& e) {
    throw e.with_context("login " + host);
  }
  image::store_credentials(host, creds, g.authfile);
  out("Login Succeeded!\n");
  return 0;
}

int cmd_logout(const std::vector<std::string>& args, const RackerGlobals& g) {
  auto a = parse(args, {{"all", 'a', false, false, "remove the credentials of every registry"}},
                 "logout [options] REGISTRY | logout --all", 0, 1);
  if (a.flag("all")) {
    if (!a.positional.empty()) throw Error("logout: --all takes no registry", EINVAL);
    for (const auto& key : stored_registries(g.authfile))
      image::remove_credentials(key, g.authfile);
    out("Removed login credentials for all registries\n");
    return 0;
  }
  if (a.positional.empty()) throw Error("usage: racker logout [options] REGISTRY", EINVAL);
  std::string host = registry_host(a.positional[0]);
  if (!image::remove_credentials(host, g.authfile)) throw Error("not logged in to " + host, ENOENT);
  out("Removed login credentials for " + host + "\n");
  return 0;
}

int cmd_push(const std::vector<std::string>& args, const RackerGlobals& g) {
  auto a = parse(args,
                 {{"quiet", 'q', false, false, "print only the manifest digest"},
                  {"tls-verify", 0, true, false, "verify TLS certificates (default true)"}},
                 "push [options] IMAGE [DESTINATION]", 1, 2);
  image::ContentStore content(g.root);
  image::ImageStore images(g.root);
  bool quiet = a.flag("quiet");
  image::PushOptions o;
  o.registries_conf = g.registries_conf;
  o.authfile = g.authfile;
  o.certs_dir = g.certs_dir;
  o.tls_verify = tls_verify_option(a);
  o.on_event = [&](const image::PushEvent& e) {
    if (quiet) return;
    const char* what = e.is_config ? "config" : "blob";
    switch (e.kind) {
      case image::PushEvent::blob_exists:
        out(std::string("Copying ") + what + " " + e.digest + " already exists\n");
        break;
      case image::PushEvent::blob_pushed:
        out(std::string("Copying ") + what + " " + e.digest + " done\n");
        break;
      case image::PushEvent::manifest_pushed:
        out("Writing manifest " + e.digest + "\n");
        break;
    }
  };
  auto r = image::push_image(content, images, a.positional[0],
                             a.positional.size() > 1 ? a.positional[1] : "", o);
  if (!quiet) out("Pushed " + r.destination + "\n");
  out(r.manifest_digest + "\n");
  return 0;
}

}  // namespace racker::cli
