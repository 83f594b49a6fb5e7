#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "base/error.hpp"
#include "probe/report.hpp"

using namespace racker::probe;

namespace {

Report sample() {
  Report r;
  SuiteResult s;
  s.name = "pkgprobe debian-bookworm";
  s.image = "debian-bookworm";
  s.checks.push_back({"boot debian-bookworm", true, false, 0.5, "", ""});
  s.checks.push_back({"unit <a&b>.service", false, false, 1.25, "unit \"x\" is 'failed' & <gone>",
                      "line1\nbad\x01"
                      "ctl\x1b[0m\n"});
  s.checks.push_back({"network http://h/?a=1&b=2", false, true, 0, "skipped: earlier", ""});
  r.suites.push_back(s);
  return r;
}

}  // namespace

TEST(Report, XmlEscape) {
  EXPECT_EQ(xml_escape("a<b>&\"c'"), "a&lt;b&gt;&amp;&quot;c&apos;");
  EXPECT_EQ(xml_escape("x\ny\tz"), "x&#10;y&#9;z");
  EXPECT_EQ(xml_escape(std::string("a\x01") + "b"),
            "a\xef\xbf\xbd"
            "b");
  EXPECT_EQ(xml_escape("žluťoučký"), "žluťoučký");
}

TEST(Report, JunitHasOneTestcasePerCheck) {
  auto x = to_junit_xml(sample());
  EXPECT_EQ(x.rfind("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n", 0), 0u);
  for (const char* part : {
           "<testsuites name=\"postroj\" tests=\"3\" failures=\"1\" errors=\"0\" "
           "skipped=\"1\" time=\"1.750\">",
           "<testcase classname=\"postroj.debian-bookworm\" name=\"boot debian-bookworm\" "
           "time=\"0.500\"/>",
           "name=\"unit &lt;a&amp;b&gt;.service\" time=\"1.250\">",
           "<failure message=\"unit &quot;x&quot; is &apos;failed&apos; &amp; "
           "&lt;gone&gt;\" type=\"failure\">",
           "line1&#10;bad\xef\xbf\xbd"
           "ctl\xef\xbf\xbd[0m",
           "name=\"network http://h/?a=1&amp;b=2\"",
           "<skipped message=\"skipped: earlier\"/>",
       })
    EXPECT_NE(x.find(part), std::string::npos) << part << "\nnot in:\n" << x;
  // nothing raw that would break a parser
  EXPECT_EQ(x.find('\x01'), std::string::npos);
  EXPECT_EQ(x.find("<a&b>"), std::string::npos);
}

TEST(Report, JsonRoundTrips) {
  auto r = sample();
  r.suites[0].checks[1].detail += "\xff\xfe invalid utf-8";
  auto j = nlohmann::json::parse(to_json(r));
  EXPECT_EQ(j["tool"], "postroj");
  EXPECT_EQ(j["passed"], false);
  auto& checks = j["suites"][0]["checks"];
  ASSERT_EQ(checks.size(), 3u);
  EXPECT_EQ(checks[0]["status"], "passed");
  EXPECT_EQ(checks[1]["status"], "failed");
  EXPECT_EQ(checks[1]["name"], "unit <a&b>.service");
  EXPECT_EQ(checks[1]["message"], "unit \"x\" is 'failed' & <gone>");
  EXPECT_NE(checks[1]["detail"].get<std::string>().find("invalid utf-8"), std::string::npos);
  EXPECT_EQ(checks[2]["status"], "skipped");
  EXPECT_DOUBLE_EQ(checks[1]["time"].get<double>(), 1.25);
  EXPECT_EQ(j["suites"][0]["image"], "debian-bookworm");
}

TEST(Report, PassedNeedsChecksAndNoFailures) {
  Report r;
  EXPECT_FALSE(r.passed());
  SuiteResult s;
  s.checks.push_back({"a", true, false, 0, "", ""});
  r.suites.push_back(s);
  EXPECT_TRUE(r.passed());
  EXPECT_FALSE(sample().passed());
}

TEST(Report, HumanSummary) {
  auto h = to_human(sample());
  EXPECT_NE(h.find("ok      500 ms  boot debian-bookworm"), std::string::npos) << h;
  EXPECT_NE(h.find("FAIL    1.25 s  unit <a&b>.service"), std::string::npos) << h;
  EXPECT_NE(h.find("| line1"), std::string::npos) << h;
  EXPECT_NE(h.find("FAILED: 3 checks, 1 failed, 1 skipped"), std::string::npos) << h;
}

TEST(Report, Spec) {
  auto s = parse_report_spec("junit:/tmp/a.xml");
  EXPECT_EQ(s.format, ReportFormat::junit);
  EXPECT_EQ(s.path, "/tmp/a.xml");
  EXPECT_EQ(parse_report_spec("json:r:1.json").path, "r:1.json");
  EXPECT_THROW(parse_report_spec("xml:a"), racker::Error);
  EXPECT_THROW(parse_report_spec("junit:"), racker::Error);
  EXPECT_THROW(parse_report_spec("a.xml"), racker::Error);
}
