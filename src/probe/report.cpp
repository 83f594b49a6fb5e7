#include "probe/report.hpp"

#include <cerrno>
#include <cstdio>

#include <nlohmann/json.hpp>

#include "base/error.hpp"
#include "base/fs.hpp"

namespace racker::probe {
namespace {

std::string seconds_text(double s) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3f", s < 0 ? 0.0 : s);
  return buf;
}

std::string duration_text(double s) {
  char buf[32];
  if (s < 1)
    std::snprintf(buf, sizeof buf, "%.0f ms", s * 1000);
  else
    std::snprintf(buf, sizeof buf, "%.2f s", s);
  return buf;
}

}  // namespace

bool SuiteResult::passed() const {
  for (auto& c : checks)
    if (!c.passed) return false;
  return !checks.empty();
}

double SuiteResult::seconds() const {
  double t = 0;
  for (auto& c : checks) t += c.seconds;
  return t;
}

int SuiteResult::failures() const {
  int n = 0;
  for (auto& c : checks) n += !c.passed && !c.skipped;
  return n;
}

int SuiteResult::skipped() const {
  int n = 0;
  for (auto& c : checks) n += c.skipped;
  return n;
}

bool Report::passed() const {
  for (auto& s : suites)
    if (!s.passed()) return false;
  return !suites.empty();
}

ReportSpec parse_report_spec(const std::string& arg) {
  auto colon = arg.find(':');
  std::string kind = colon == std::string::npos ? "" : arg.substr(0, colon);
  std::string path = colon == std::string::npos ? "" : arg.substr(colon + 1);
  if (kind != "junit" && kind != "json")
    throw Error("invalid --report \"" + arg + "\": use junit:FILE or json:FILE", EINVAL);
  if (path.empty()) throw Error("invalid --report \"" + arg + "\": no file given", EINVAL);
  return {kind == "junit" ? ReportFormat::junit : ReportFormat::json, path};
}

std::string xml_escape(const std::string& s) {
  std::string o;
  o.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    switch (c) {
      case '&':
        o += "&amp;";
        break;
      case '<':
        o += "&lt;";
        break;
      case '>':
        o += "&gt;";
        break;
      case '"':
        o += "&quot;";
        break;
      case '\'':
        o += "&apos;";
        break;
      case '\n':
        o += "&#10;";
        break;
      case '\r':
        o += "&#13;";
        break;
      case '\t':
        o += "&#9;";
        break;
      default:
        if (c < 0x20 || c == 0x7f)
          o += "\xef\xbf\xbd";
        else
          o += static_cast<char>(c);
    }
  }
  return o;
}

std::string to_junit_xml(const Report& r) {
  int tests = 0, failures = 0, skipped = 0;
  double total = 0;
  for (auto& s : r.suites) {
    tests += static_cast<int>(s.checks.size());
    failures += s.failures();
    skipped += s.skipped();
    total += s.seconds();
  }
  std::string x = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n";
  x += "<testsuites name=\"" + xml_escape(r.tool) + "\" tests=\"" + std::to_string(tests) +
       "\" failures=\"" + std::to_string(failures) + "\" errors=\"0\" skipped=\"" +
       std::to_string(skipped) + "\" time=\"" + seconds_text(total) + "\">\n";
  for (auto& s : r.suites) {
    x += "  <testsuite name=\"" + xml_escape(s.name) + "\" tests=\"" +
         std::to_string(s.checks.size()) + "\" failures=\"" + std::to_string(s.failures()) +
         "\" errors=\"0\" skipped=\"" + std::to_string(s.skipped()) + "\" time=\"" +
         seconds_text(s.seconds()) + "\">\n";
    if (!s.image.empty())
      x += "    <properties><property name=\"image\" value=\"" + xml_escape(s.image) +
           "\"/></properties>\n";
    std::string classname = r.tool + "." + s.image;
    for (auto& c : s.checks) {
      x += "    <testcase classname=\"" + xml_escape(classname) + "\" name=\"" +
           xml_escape(c.name) + "\" time=\"" + seconds_text(c.seconds) + "\"";
      if (c.passed) {
        x += "/>\n";
        continue;
      }
      x += ">\n";
      if (c.skipped) {
        x += "      <skipped message=\"" + xml_escape(c.message) + "\"/>\n";
      } else {
        x += "      <failure message=\"" + xml_escape(c.message) + "\" type=\"failure\">";
        std::string body = c.message + (c.detail.empty() ? "" : "\n" + c.detail);
        // content: only &, < and > need escaping, but xml_escape is correct there too
        x += xml_escape(body) + "</failure>\n";
      }
      x += "    </testcase>\n";
    }
    x += "  </testsuite>\n";
  }
  x += "</testsuites>\n";
  return x;
}

std::string to_json(const Report& r) {
  nlohmann::json suites = nlohmann::json::array();
  for (auto& s : r.suites) {
    nlohmann::json checks = nlohmann::json::array();
    for (auto& c : s.checks) {
      nlohmann::json j = {{"name", c.name},
                          {"status", c.passed    ? "passed"
                                     : c.skipped ? "skipped"
                                                 : "failed"},
                          {"time", c.seconds}};
      if (!c.message.empty()) j["message"] = c.message;
      if (!c.detail.empty()) j["detail"] = c.detail;
      checks.push_back(std::move(j));
    }
    suites.push_back({{"name", s.name},
                      {"image", s.image},
                      {"passed", s.passed()},
                      {"time", s.seconds()},
                      {"checks", std::move(checks)}});
  }
  nlohmann::json doc = {{"tool", r.tool}, {"passed", r.passed()}, {"suites", std::move(suites)}};
  // command output may hold invalid UTF-8: replace it rather than fail the report
  return doc.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
}

Report report_from_json(const std::string& text) {
  Report r;
  try {
    auto doc = nlohmann::json::parse(text);
    r.tool = doc.value("tool", "postroj");
    for (auto& s : doc.at("suites")) {
      SuiteResult suite;
      suite.name = s.value("name", "");
      suite.image = s.value("image", "");
      for (auto& c : s.at("checks")) {
        CheckResult check;
        check.name = c.value("name", "");
        std::string status = c.value("status", "failed");
        check.passed = status == "passed";
        check.skipped = status == "skipped";
        check.seconds = c.value("time", 0.0);
        check.message = c.value("message", "");
        check.detail = c.value("detail", "");
        suite.checks.push_back(std::move(check));
      }
      r.suites.push_back(std::move(suite));
    }
  } catch (const nlohmann::json::exception& e) {
    throw Error(std::string("not a postroj JSON report: ") + e.what(), EINVAL);
  }
  return r;
}

std::string to_human(const Report& r) {
  std::string o;
  for (auto& s : r.suites) {
    o += s.name + ":\n";
    for (auto& c : s.checks) {
      const char* verdict = c.passed ? "ok  " : c.skipped ? "skip" : "FAIL";
      char line[64];
      std::snprintf(line, sizeof line, "  %s %9s  ", verdict, duration_text(c.seconds).c_str());
      o += line + c.name + "\n";
      if (!c.passed && !c.message.empty()) o += "       " + c.message + "\n";
      if (!c.passed && !c.skipped && !c.detail.empty()) {
        for (size_t p = 0; p < c.detail.size();) {
          auto nl = c.detail.find('\n', p);
          if (nl == std::string::npos) nl = c.detail.size();
          o += "         | " + c.detail.substr(p, nl - p) + "\n";
          p = nl + 1;
        }
      }
    }
    char tail[128];
    std::snprintf(tail, sizeof tail, "  %s: %zu checks, %d failed, %d skipped, %s\n",
                  s.passed() ? "PASSED" : "FAILED", s.checks.size(), s.failures(), s.skipped(),
                  duration_text(s.seconds()).c_str());
    o += tail;
  }
  return o;
}

void write_report(const Report& r, const ReportSpec& spec) {
  try {
    write_file_atomic(spec.path, spec.format == ReportFormat::junit ? to_junit_xml(r) : to_json(r));
  } catch (const Error& e) {
    throw e.with_context("write report " + spec.path);
  }
}

}  // namespace racker::probe
