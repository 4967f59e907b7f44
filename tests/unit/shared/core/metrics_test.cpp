#include "mlswarm/metrics.h"

#include <gtest/gtest.h>

#include <regex>
#include <sstream>

namespace mlswarm {
namespace {

/// True when every line is a comment or `name{labels} value` of the text exposition format.
bool is_prometheus_text(const std::string& text) {
  static const std::regex sample(
      R"(^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\]|\\.)*",?)*\})? (-?[0-9.e+-]+|[+-]Inf|NaN)$)");
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("# HELP ", 0) == 0 || line.rfind("# TYPE ", 0) == 0) continue;
    if (!std::regex_match(line, sample)) {
      ADD_FAILURE() << "not a sample line: " << line;
      return false;
    }
  }
  return true;
}

TEST(Metrics, RendersCountersGaugesAndCumulativeHistograms) {
  Metrics m;
  m.describe("reqs_total", "counter", "requests");
  m.inc("reqs_total", {{"route", "/predict"}, {"status", "200"}});
  m.inc("reqs_total", {{"route", "/predict"}, {"status", "200"}}, 2);
  m.describe("lat_seconds", "histogram", "latency");
  m.observe("lat_seconds", {{"route", "/x"}}, 0.003);
  m.observe("lat_seconds", {{"route", "/x"}}, 0.2);
  m.set("weird", {{"id", "a\"b\\c"}}, 1.5);
  std::string text = m.render();
  EXPECT_TRUE(is_prometheus_text(text)) << text;
  EXPECT_NE(text.find("reqs_total{route=\"/predict\",status=\"200\"} 3\n"), std::string::npos) << text;
  EXPECT_NE(text.find("lat_seconds_bucket{route=\"/x\",le=\"0.005\"} 1\n"), std::string::npos) << text;
  EXPECT_NE(text.find("lat_seconds_bucket{route=\"/x\",le=\"0.25\"} 2\n"), std::string::npos) << text;
  EXPECT_NE(text.find("lat_seconds_bucket{route=\"/x\",le=\"+Inf\"} 2\n"), std::string::npos) << text;
  EXPECT_NE(text.find("lat_seconds_count{route=\"/x\"} 2\n"), std::string::npos) << text;
  EXPECT_NE(text.find("weird{id=\"a\\\"b\\\\c\"} 1.5\n"), std::string::npos) << text;
}

TEST(Metrics, CollectorsRefreshGaugesAndCanBeRemoved) {
  Metrics m;
  int calls = 0;
  int handle = m.add_collector([&](Metrics& self) { self.set("g", {}, ++calls); });
  EXPECT_NE(m.render().find("g 1\n"), std::string::npos);
  EXPECT_NE(m.render().find("g 2\n"), std::string::npos);
  m.remove_collector(handle);
  m.render();
  EXPECT_EQ(calls, 2);
}

}  // namespace
}  // namespace mlswarm
