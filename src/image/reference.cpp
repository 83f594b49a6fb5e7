#include "image/reference.hpp"

#include <cerrno>

#include "base/error.hpp"
#include "base/strings.hpp"
#include "image/digest.hpp"

namespace racker::image {

namespace {

constexpr std::string_view kDockerPrefix = "docker://";
constexpr std::string_view kLegacyDockerHub = "index.docker.io";
constexpr std::string_view kOfficialNamespace = "library/";
constexpr size_t kNameTotalLengthMax = 255;
constexpr size_t kTagLengthMax = 128;

bool is_lower_alnum(char c) {
  return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}
bool is_alnum(char c) {
  return is_lower_alnum(c) || (c >= 'A' && c <= 'Z');
}
bool is_word(char c) {
  return is_alnum(c) || c == '_';
}
bool is_digit(char c) {
  return c >= '0' && c <= '9';
}
bool is_hex(char c) {
  return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

// path-component := [a-z0-9]+ ( ( [._] | "__" | "-"+ ) [a-z0-9]+ )*
bool is_valid_path_component(std::string_view c) {
  size_t i = 0;
  auto alnum_run = [&] {
    size_t start = i;
    while (i < c.size() && is_lower_alnum(c[i])) ++i;
    return i > start;
  };
  if (!alnum_run()) return false;
  while (i < c.size()) {
    if (c[i] == '.') {
      ++i;
    } else if (c[i] == '_') {
      ++i;
      if (i < c.size() && c[i] == '_') ++i;
    } else if (c[i] == '-') {
      while (i < c.size() && c[i] == '-') ++i;
    } else {
      return false;
    }
    if (!alnum_run()) return false;
  }
  return true;
}

// domain-component := [a-zA-Z0-9] | [a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]
bool is_valid_domain_component(std::string_view c) {
  if (c.empty() || !is_alnum(c.front()) || !is_alnum(c.back())) return false;
  for (char ch : c)
    if (!is_alnum(ch) && ch != '-') return false;
  return true;
}

// tag := [\w][\w.-]{0,127}
bool is_valid_tag(std::string_view t) {
  if (t.empty() || t.size() > kTagLengthMax || !is_word(t.front())) return false;
  for (char c : t)
    if (!is_word(c) && c != '.' && c != '-') return false;
  return true;
}

bool is_identifier(std::string_view s) {
  if (s.size() != 64) return false;
  for (char c : s)
    if (!is_digit(c) && !(c >= 'a' && c <= 'f')) return false;
  return true;
}

}  // namespace

bool looks_like_registry(std::string_view component) {
  return component.find_first_of(".:") != std::string_view::npos || component == "localhost";
}

bool is_valid_registry_host(std::string_view host) {
  std::string_view port;
  if (host.starts_with('[')) {
    size_t close = host.find(']');
    if (close == std::string_view::npos || close == 1) return false;
    for (char c : host.substr(1, close - 1))
      if (!is_hex(c) && c != ':') return false;
    std::string_view rest = host.substr(close + 1);
    if (rest.empty()) return true;
    if (rest.front() != ':') return false;
    port = rest.substr(1);
    if (port.empty()) return false;
  } else {
    size_t colon = host.find(':');
    std::string_view domain = host.substr(0, colon);
    if (colon != std::string_view::npos) {
      port = host.substr(colon + 1);
      if (port.empty()) return false;
    }
    size_t start = 0;
    for (;;) {
      size_t dot = domain.find('.', start);
      if (!is_valid_domain_component(domain.substr(start, dot - start))) return false;
      if (dot == std::string_view::npos) break;
      start = dot + 1;
    }
  }
  for (char c : port)
    if (!is_digit(c)) return false;
  return true;
}

std::string Reference::name() const {
  return registry + "/" + repository;
}

std::string Reference::str() const {
  std::string out = name();
  if (!tag.empty()) out += ":" + tag;
  if (!digest.empty()) out += "@" + digest;
  return out;
}

std::string Reference::familiar() const {
  std::string out;
  if (registry == kDockerHub) {
    std::string_view repo = repository;
    if (repo.starts_with(kOfficialNamespace) &&
        repo.find('/', kOfficialNamespace.size()) == std::string_view::npos)
      repo.remove_prefix(kOfficialNamespace.size());
    // "docker.io/foo.bar/x" without its host would read back as registry "foo.bar".
    size_t slash = repo.find('/');
    if (slash != std::string_view::npos && looks_like_registry(repo.substr(0, slash)))
      out = name();
    else
      out = repo;
  } else {
    out = name();
  }
  if (!tag.empty()) out += ":" + tag;
  if (!digest.empty()) out += "@" + digest;
  return out;
}

Reference parse_reference(std::string_view input) {
  auto invalid = [input](const std::string& problem) {
    return Error(printable("invalid reference \"" + std::string(input) + "\": " + problem), EINVAL);
  };

  std::string_view s = input;
  if (s.starts_with(kDockerPrefix)) s.remove_prefix(kDockerPrefix.size());
  if (s.empty()) throw invalid("empty reference");
  // A bare 64-hex string is an image ID, never a repository name (docker refuses it too).
  if (is_identifier(s)) throw invalid("cannot specify 64-byte hexadecimal strings");

  Reference ref;
  if (size_t at = s.find('@'); at != std::string_view::npos) {
    std::string_view digest = s.substr(at + 1);
    if (digest.empty()) throw invalid("empty digest");
    try {
      validate_digest(digest);
    } catch (const Error& e) {
      throw invalid(e.what());
    }
    ref.digest = digest;
    s = s.substr(0, at);
  }

  // A ':' after the last '/' starts the tag; one before it belongs to a registry port.
  bool tag_given = false;
  size_t last_slash = s.rfind('/');
  size_t colon = s.find(':', last_slash == std::string_view::npos ? 0 : last_slash + 1);
  if (colon != std::string_view::npos) {
    std::string_view tag = s.substr(colon + 1);
    if (tag.empty()) throw invalid("empty tag");
    if (!is_valid_tag(tag)) throw invalid("invalid tag \"" + std::string(tag) + "\"");
    ref.tag = tag;
    tag_given = true;
    s = s.substr(0, colon);
  }
  if (s.empty()) throw invalid("empty repository name");

  std::string_view path = s;
  if (size_t slash = s.find('/'); slash != std::string_view::npos) {
    std::string_view first = s.substr(0, slash);
    if (looks_like_registry(first)) {
      if (!is_valid_registry_host(first))
        throw invalid("invalid registry host \"" + std::string(first) + "\"");
      ref.registry = first;
      ref.registry_given = true;
      path = s.substr(slash + 1);
    }
  }
  if (!ref.registry_given || ref.registry == kLegacyDockerHub) ref.registry = kDockerHub;
  if (path.empty()) throw invalid("empty repository name");

  for (char c : path)
    if (c >= 'A' && c <= 'Z') throw invalid("repository name must be lowercase");
  size_t start = 0;
  for (;;) {
    size_t slash = path.find('/', start);
    std::string_view component = path.substr(start, slash - start);
    if (component.empty()) throw invalid("empty repository name component");
    if (!is_valid_path_component(component))
      throw invalid("invalid repository name component \"" + std::string(component) + "\"");
    if (slash == std::string_view::npos) break;
    start = slash + 1;
  }

  ref.repository = path;
  if (ref.registry == kDockerHub && path.find('/') == std::string_view::npos)
    ref.repository = std::string(kOfficialNamespace) + ref.repository;
  if (ref.name().size() > kNameTotalLengthMax)
    throw invalid("repository name must not be more than 255 characters");
  if (!tag_given && ref.digest.empty()) ref.tag = "latest";
  return ref;
}

}  // namespace racker::image
