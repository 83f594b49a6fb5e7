// Results of postroj's checks and the reports written from them: a human summary, JUnit XML
// (one <testsuite> per probed image, one <testcase> per check) and JSON. Pure formatting.
#pragma once

#include <string>
#include <vector>

namespace racker::probe {

struct CheckResult {
  std::string name;  // "boot", "install nginx-light_1.22.deb", "unit nginx", "network http://..."
  bool passed = false;
  bool skipped = false;  // not run because an earlier step failed
  double seconds = 0;
  std::string message;  // one line for failures ("unit x: failed after 3.0 s")
  std::string detail;   // more lines (journal, command output)
};

struct SuiteResult {
  std::string name;   // "pkgprobe debian-bookworm"
  std::string image;  // the label
  std::vector<CheckResult> checks;
  bool passed() const;
  double seconds() const;
  int failures() const;
  int skipped() const;
};

struct Report {
  std::string tool = "postroj";
  std::vector<SuiteResult> suites;
  bool passed() const;
};

enum class ReportFormat { junit, json };
struct ReportSpec {
  ReportFormat format;
  std::string path;
};
// "junit:FILE" or "json:FILE"; throws racker::Error (EINVAL) naming the argument.
ReportSpec parse_report_spec(const std::string& arg);

// Escapes text for XML attributes and content; characters XML 1.0 cannot hold (control
// characters other than tab, newline and carriage return) become U+FFFD.
std::string xml_escape(const std::string& s);
std::string to_junit_xml(const Report& r);
std::string to_json(const Report& r);
// A report to_json wrote, read back (postroj matrix merges its probes' reports); throws
// racker::Error (EINVAL) for what is not one.
Report report_from_json(const std::string& text);
// Per-check lines with timings and a verdict.
std::string to_human(const Report& r);
// Writes the report atomically in the spec's format; throws racker::Error naming the file.
void write_report(const Report& r, const ReportSpec& spec);

}  // namespace racker::probe
