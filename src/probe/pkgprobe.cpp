#include "probe/pkgprobe.hpp"

#include <cerrno>
#include <chrono>
#include <memory>
#include <regex>
#include <thread>

#include "base/error.hpp"
#include "base/strings.hpp"
#include "engine/os_container.hpp"
#include "engine/package_managers.hpp"
#include "probe/acquire.hpp"
#include "probe/netcheck.hpp"

namespace racker::probe {
namespace {

using Clock = std::chrono::steady_clock;

double since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

std::string one_line(const std::string& s) {
  std::string o;
  for (char c : s) o += (c == '\n' || c == '\r') ? ' ' : c;
  while (!o.empty() && o.back() == ' ') o.pop_back();
  return o;
}

// Runs the steps of a suite: each adds one check; after a failure the rest are skipped.
class Steps {
 public:
  explicit Steps(SuiteResult& s) : suite_(s) {}
  bool failed() const { return failed_; }
  // fn returns "" on success or the failure message; it may fill detail.
  bool run(const std::string& name, const std::function<std::string(std::string&)>& fn) {
    CheckResult c;
    c.name = name;
    if (failed_) {
      c.skipped = true;
      c.message = "skipped: an earlier check failed";
      suite_.checks.push_back(c);
      return false;
    }
    auto t0 = Clock::now();
    try {
      c.message = fn(c.detail);
    } catch (const Error& e) {
      if (e.kind() == ErrorKind::interrupted) throw;  // Ctrl-C: no verdict, postroj exits 128+N
      c.message = e.what();
    } catch (const std::exception& e) {
      c.message = e.what();
    }
    c.seconds = since(t0);
    c.passed = c.message.empty();
    failed_ |= !c.passed;
    suite_.checks.push_back(c);
    return c.passed;
  }

 private:
  SuiteResult& suite_;
  bool failed_ = false;
};

std::string unit_name(const std::string& u) {
  return u.find('.') == std::string::npos ? u + ".service" : u;
}

// Makes sure the label's image is in the store (pulling or baking it when missing).
std::string ready_image(const CatalogEntry& e, const ProbeEnv& env, Steps& steps) {
  if (auto rec = find_ready_image(env.store_root, e, env.arch)) return rec->id;
  std::string id;
  if (env.on_status)
    env.on_status(e.label + (env.arch.empty() ? "" : " (" + env.arch + ")") +
                  " is not pulled yet: " + (e.baked() ? "baking" : "pulling") + " it first");
  steps.run("pull image " + e.label, [&](std::string&) {
    id = acquire_image(e, acquire_options(env)).id;
    return std::string();
  });
  return id;
}

engine::OsContainerOptions container_options(const CatalogEntry& e, const std::string& image,
                                             const ProbeEnv& env, int boot_timeout_s) {
  engine::OsContainerOptions co;
  co.image = image;
  co.name = "postroj-" + e.label + "-" + random_hex(8);
  co.network = "private";
  co.store_root = env.store_root;
  co.state_root = env.state_root;
  co.ready_timeout_ms = boot_timeout_s * 1000;
  co.fast_teardown = true;
  return co;
}

std::string check_unit(engine::OsContainer& c, const std::string& unit, int timeout_s,
                       std::string& detail) {
  auto t0 = Clock::now();
  int budget_ms = timeout_s * 1000;
  auto left_ms = [&] { return std::max(1000, budget_ms - static_cast<int>(since(t0) * 1000)); };
  // no reload here: the install step reloaded systemd once (enable's own reload costs ~0.2 s)
  auto en = c.exec({"systemctl", "--no-reload", "enable", "--now", unit}, left_ms());
  bool start_failed = false;
  std::string start_output;
  if (en.status != 0) {
    // units without an [Install] section cannot be enabled, only started
    auto st = c.exec({"systemctl", "start", unit}, left_ms());
    start_failed = st.status != 0;
    start_output = one_line(en.output) + (st.output.empty() ? "" : "; " + one_line(st.output));
  }
  std::string state;
  for (;;) {
    auto r = c.exec({"systemctl", "is-active", unit}, 5000);
    state = one_line(r.output);
    if (state == "active") return "";
    if (state == "failed" || start_failed) break;
    if (since(t0) * 1000 >= budget_ms) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  auto j = c.exec({"journalctl", "-u", unit, "--no-pager", "-n", "15"}, 10000);
  detail = last_lines(j.output, 15);
  char took[32];
  std::snprintf(took, sizeof took, "%.1f", since(t0));
  std::string msg = "unit " + unit + " is " + (state.empty() ? "unknown" : state) + " after " +
                    took + " s (wanted active)";
  if (!start_output.empty()) msg += "; systemctl: " + start_output;
  if (!detail.empty()) {
    // the journal's last lines belong in the one-line message too: that is where the cause is
    std::string tail = last_lines(detail, 3);
    msg += "; journal: " + one_line(tail);
  }
  return msg;
}

}  // namespace

std::string last_lines(const std::string& text, size_t n) {
  std::string t = text;
  while (!t.empty() && t.back() == '\n') t.pop_back();
  size_t pos = t.size();
  for (size_t k = 0; k < n && pos > 0; ++k) {
    auto nl = t.rfind('\n', pos - 1);
    if (nl == std::string::npos) return t;
    pos = nl;
    if (k + 1 == n) return t.substr(nl + 1);
  }
  return t;
}

std::vector<std::string> install_command(const std::string& pm,
                                         const std::vector<std::string>& files) {
  std::vector<std::string> a = engine::package_manager(pm).install_files;
  a.insert(a.end(), files.begin(), files.end());
  return a;
}

void validate_pkgprobe(const Catalog& catalog, const PkgprobeOptions& o) {
  catalog.at(o.label);
  for (auto& p : o.packages) parse_package_arg(p);
  for (auto& u : o.network_urls) parse_check_url(u);
  for (auto& u : o.units)
    if (u.empty() || u.find('/') != std::string::npos || u[0] == '-')
      throw Error("invalid --check-unit \"" + u + "\"", EINVAL);
  if (o.timeout_s <= 0) throw Error("--timeout must be positive", EINVAL);
  if (o.network_timeout_s <= 0) throw Error("--network-timeout must be positive", EINVAL);
}

AcquireOptions acquire_options(const ProbeEnv& env) {
  AcquireOptions a;
  a.store_root = env.store_root;
  a.state_root = env.state_root;
  a.bake_cache = env.bake_cache;
  a.registries_conf = env.registries_conf;
  a.download_cache = env.download_cache;
  a.arch = env.arch;
  a.on_status = env.on_status;
  return a;
}

PkgprobeOutcome run_pkgprobe(const Catalog& catalog, const PkgprobeOptions& o,
                             const ProbeEnv& env) {
  const CatalogEntry& e = catalog.at(o.label);
  PkgprobeOutcome out;
  out.suite.name = "pkgprobe " + e.label;
  out.suite.image = e.label;
  Steps steps(out.suite);
  auto status = [&](const std::string& s) {
    if (env.on_status) env.on_status(s);
  };

  // packages first: a bad URL fails before anything boots
  std::vector<std::pair<std::string, std::string>> files;  // host path, name in container
  for (auto& arg : o.packages) {
    auto p = parse_package_arg(arg);
    if (!p.is_url) {
      files.emplace_back(p.path, p.file_name);
      continue;
    }
    steps.run("fetch " + p.file_name, [&](std::string&) {
      FetchOptions fo;
      fo.cache_dir = env.package_cache;
      fo.on_status = env.on_status;
      auto r = fetch_package(p, fo);
      if (r.from_cache) status("package " + p.file_name + ": cached at " + r.path);
      files.emplace_back(r.path, p.file_name);
      return std::string();
    });
  }

  std::string image;
  if (!steps.failed()) image = ready_image(e, env, steps);

  std::unique_ptr<engine::OsContainer> c;
  steps.run("boot " + e.label, [&](std::string&) {
    c = engine::OsContainer::boot(container_options(e, image, env, o.boot_timeout_s));
    status("booted " + c->name() + " in " + std::to_string(c->ready_ms()) + " ms");
    return std::string();
  });

  if (!files.empty()) {
    std::string names;
    for (auto& [_, n] : files) names += (names.empty() ? "" : " ") + n;
    steps.run("install " + names, [&](std::string& detail) {
      std::vector<std::string> in_container;
      for (auto& [host, n] : files) {
        std::string dst = "/tmp/postroj/" + n;
        c->copy_in(host, dst);
        in_container.push_back(dst);
      }
      int budget = o.install_timeout_s * 1000;
      auto cmd = install_command(e.package_manager, in_container);
      status("installing " + names + " with " + e.package_manager);
      auto r = c->exec(cmd, budget);
      if (r.status != 0 && !r.timed_out && e.package_manager == "apt") {
        // images come without package lists: fetch them only when dependencies need them
        auto lists = c->exec({"sh", "-c", "ls /var/lib/apt/lists/ | grep -q _Packages"}, 10000);
        if (lists.status != 0) {
          status("apt lists are empty and dependencies are missing: apt-get update");
          auto up = c->exec({"apt-get", "update"}, budget);
          if (up.status != 0)
            status("apt-get update failed: " + one_line(last_lines(up.output, 2)));
          r = c->exec(cmd, budget);
        }
      }
      if (r.status == 0) {
        // units the packages shipped: known to systemd even if no maintainer script reloaded
        c->exec({"systemctl", "daemon-reload"}, 60000);
        return std::string();
      }
      detail = last_lines(r.output, 20);
      std::string why = r.timed_out
                            ? "timed out after " + std::to_string(o.install_timeout_s) + " s"
                            : "exit status " + std::to_string(r.status);
      return "install " + names + ": " + cmd[e.package_manager == "apt" ? 2 : 0] + " " + why +
             ": " + one_line(last_lines(r.output, 2));
    });
  }

  for (auto& u : o.units) {
    std::string unit = unit_name(u);
    steps.run("unit " + unit,
              [&](std::string& detail) { return check_unit(*c, unit, o.timeout_s, detail); });
  }
  for (auto& url : o.network_urls) {
    steps.run("network " + url, [&](std::string&) {
      auto cu = parse_check_url(url);
      cu.status_classes = o.http_status;
      auto r = check_until(c->netns_path(), cu, o.network_timeout_s * 1000);
      if (r.ok) return std::string();
      return "network " + url + ": " + r.message + " (" + std::to_string(r.attempts) +
             " attempts in " + std::to_string(o.network_timeout_s) + " s)";
    });
  }

  if (c) {
    auto t0 = Clock::now();
    if (o.keep) {
      out.kept_container = c->name();
      c->keep();
    } else {
      c->tear_down();
    }
    c.reset();
    out.teardown_seconds = since(t0);
  }
  return out;
}

SuiteResult selftest_hostnamectl(const Catalog& catalog, const std::string& label,
                                 const ProbeEnv& env) {
  const CatalogEntry& e = catalog.at(label);
  SuiteResult suite;
  suite.name = "hostnamectl " + e.label;
  suite.image = e.label;
  Steps steps(suite);
  std::string image = ready_image(e, env, steps);
  std::unique_ptr<engine::OsContainer> c;
  steps.run("boot " + e.label, [&](std::string&) {
    c = engine::OsContainer::boot(container_options(e, image, env, 60));
    return std::string();
  });
  steps.run("hostnamectl", [&](std::string& detail) {
    auto r = c->exec({"hostnamectl"}, 30000);
    detail = r.output;
    if (r.status != 0) return "hostnamectl: exit status " + std::to_string(r.status);
    std::string want = c->name();
    if ((r.output + "\n").find("hostname: " + want + "\n") == std::string::npos)
      return "hostnamectl does not show the hostname " + want;
    if (!std::regex_search(r.output, std::regex("Virtualization: \\S+")))
      return std::string("hostnamectl shows no \"Virtualization:\" line");
    return std::string();
  });
  if (c) c->tear_down();
  return suite;
}

}  // namespace racker::probe
