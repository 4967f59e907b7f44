// The /predict fast path (scan_predict_body) against the full parser (nlohmann + flatten_examples):
// for every body it accepts it must give the same model, version and the very same floats,
// and it must decline every body the full parser rejects.

#include <cstring>
#include <random>

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "mlswarm/error.h"
#include "mlswarm/http.h"
#include "predict_input.h"

namespace mlswarm {
namespace {

using nlohmann::json;

ModelMeta meta_2x2() {
  ModelMeta meta;
  meta.model_id = "m";
  meta.channels = 1;
  meta.height = 2;
  meta.width = 2;
  return meta;
}

std::vector<std::uint32_t> bits(const std::vector<float>& v) {
  std::vector<std::uint32_t> out(v.size());
  if (!v.empty()) std::memcpy(out.data(), v.data(), v.size() * sizeof(float));
  return out;
}

/// Both readers on one body: the fast one must agree with the full one bit for bit.
void expect_same_as_full_parser(const std::string& body, const ModelMeta& meta) {
  auto scanned = scan_predict_body(body, 64, kMaxJsonDepth);
  ASSERT_TRUE(scanned) << body;
  json parsed = json::parse(body);
  EXPECT_EQ(scanned->model_id, parsed["model_id"].get<std::string>());
  EXPECT_EQ(scanned->version, parsed.value("version", json()).is_null() ? 0 : parsed["version"].get<int>());
  EXPECT_EQ(bits(scanned->pixels), bits(flatten_examples(parsed["examples"], meta, 64))) << body;
  EXPECT_EQ(scanned->sizes.size(), parsed["examples"].size());
}

TEST(ScanPredictBody, ReadsTheUsualShapesLikeTheJsonParser) {
  const ModelMeta meta = meta_2x2();
  expect_same_as_full_parser(R"({"model_id": "m", "examples": [[[[0, 0.5], [1, 0.25]]]]})", meta);
  expect_same_as_full_parser(R"({"examples":[[0,1,0.1,0.3]],"model_id":"m","version":7})", meta);
  expect_same_as_full_parser(R"({"model_id":"m","version":null,"examples":[[[0.1,0.2],[0.3,0.4]],[0,0,0,1]]})", meta);
  expect_same_as_full_parser(" \n{ \"model_id\" : \"m\" ,\t\"examples\" : [ [ 1e-3 , 2.5E-1 , 0.0 , -0.0 ] ] } \r\n",
                             meta);
  expect_same_as_full_parser(R"({"model_id":"m","examples":[[0.1234567890123456789, 1e-300, 0.999999999999, 1.0e0]]})",
                             meta);
}

TEST(ScanPredictBody, GivesTheSameFloatsAsTheJsonParserForRandomPixels) {
  // Pixels as Python's json.dumps writes them (shortest round-trip doubles) and as our
  // examples endpoint writes them (3 decimals): a million values, compared bit for bit.
  std::mt19937_64 rng(42);
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  ModelMeta meta;
  meta.model_id = "m";
  meta.channels = 1;
  meta.height = 28;
  meta.width = 28;
  for (int round = 0; round < 40; ++round) {
    json examples = json::array();
    for (int e = 0; e < 32; ++e) {
      std::vector<double> px(784);
      for (auto& x : px) {
        x = unit(rng);
        if (round % 2 == 1) x = std::round(x * 1000) / 1000;
        if (round % 5 == 0 && (rng() & 3) == 0) x = 0;
      }
      examples.push_back(px);
    }
    expect_same_as_full_parser(json{{"model_id", "m"}, {"examples", examples}}.dump(), meta);
  }
}

TEST(ScanPredictBody, ReadsShortDecimalsLikeTheJsonParser) {
  // The scanner's own path for "0", "1" and "0.ddd" up to 15 digits: every byte value / 255
  // as a float's shortest text (what clients that send float32 pixels write), at 1 to 17
  // digits, and the edges of that path.
  ModelMeta meta;
  meta.model_id = "m";
  meta.channels = 1;
  meta.height = 1;
  meta.width = 256;
  for (int digits = 0; digits <= 17; ++digits) {
    std::string body = R"({"model_id": "m", "examples": [[)";
    for (int k = 0; k < 256; ++k) {
      const std::string text =
          digits == 0 ? fmt::format("{}", static_cast<float>(k) / 255.0f) : fmt::format("{:.{}f}", k / 255.0, digits);
      body += (k > 0 ? ", " : "") + text;
    }
    expect_same_as_full_parser(body + "]]}", meta);
  }
  meta.width = 4;
  expect_same_as_full_parser(
      R"({"model_id":"m","examples":[[1.000000000000000,0.999999999999999,0.1234567890123456,1]]})", meta);
  expect_same_as_full_parser(R"({"model_id":"m","examples":[[0.0000000000000001,0.000000000000001,0E0,1.0]]})", meta);
  EXPECT_FALSE(scan_predict_body(R"({"model_id":"m","examples":[[1.000000000000001,0,0,0]]})", 64, kMaxJsonDepth));
  EXPECT_FALSE(scan_predict_body(R"({"model_id":"m","examples":[[0,0,0,1.5e0]]})", 64, kMaxJsonDepth));
}

TEST(ScanPredictBody, DeclinesWhatTheFullParserMustJudge) {
  const char* declined[] = {
      R"({"model_id": "m", "examples": [[0, 0, 0, 1.5]]})",  // out of 0..1: its message names the example
      R"({"model_id": "m", "examples": [[0, 0, 0, -0.1]]})",
      R"({"model_id": "m", "examples": [[0, 0, 0, 1e999]]})",  // out of a double's range
      R"({"model_id": "m", "examples": [[0, 0, 0, NaN]]})",
      R"({"model_id": "m", "examples": [[0, 0, 0, "0.5"]]})",
      R"({"model_id": "m", "examples": [[0, 0, 0, null]]})",
      R"({"model_id": "m", "examples": [[0, 0, 0, 01]]})",  // not JSON
      R"({"model_id": "m", "examples": [[0, 0, 0, .5]]})",
      R"({"model_id": "m", "examples": [[0, 0, 0, 1.]]})",
      R"({"model_id": "m", "examples": [[0, 0, 0, 0,]]})",
      R"({"model_id": "m", "examples": []})",
      R"({"model_id": "m", "examples": [[0, 0, 0, 0]]}x)",
      R"({"model_id": "m", "examples": [[0, 0, 0, 0]])",
      R"({"model_id": "m", "examples": [[0, 0, 0, 0]], "extra": 1})",  // other keys
      R"({"model_id": "m", "model_id": "n", "examples": [[0, 0, 0, 0]]})",
      R"({"model_id": "m\u0041", "examples": [[0, 0, 0, 0]]})",  // escapes
      R"({"model_id": 5, "examples": [[0, 0, 0, 0]]})",
      R"({"examples": [[0, 0, 0, 0]]})",
      R"({"model_id": "m"})",
      R"({"model_id": "m", "examples": [[0, 0, 0, 0]], "version": 0})",
      R"({"model_id": "m", "examples": [[0, 0, 0, 0]], "version": 1.0})",
      R"({"model_id": "m", "examples": [[0, 0, 0, 0]], "version": 100000000})",
      R"({"model_id": "m", "examples": [[0, 0, 0, 0]], "version": "1"})",
      R"([{"model_id": "m", "examples": [[0, 0, 0, 0]]}])",
      "",
  };
  for (const char* body : declined) EXPECT_FALSE(scan_predict_body(body, 64, kMaxJsonDepth)) << body;
  std::string many = R"({"model_id": "m", "examples": [)";
  for (int i = 0; i < 65; ++i) many += fmt::format("{}[0, 0, 0, 0]", i ? "," : "");
  EXPECT_FALSE(scan_predict_body(many + "]}", 64, kMaxJsonDepth)) << "more than max_examples";
  EXPECT_TRUE(scan_predict_body(many + "]}", 65, kMaxJsonDepth));
  const std::string deep =
      R"({"model_id": "m", "examples": [)" + std::string(40, '[') + "0" + std::string(40, ']') + "]}";
  EXPECT_FALSE(scan_predict_body(deep, 64, kMaxJsonDepth)) << "deeper than the full parser allows";
}

TEST(ScanPredictBody, CountsEachExamplesNumbersForTheShapeCheck) {
  auto scanned =
      scan_predict_body(R"({"model_id": "m", "examples": [[0, 1], [[0], [], [1, 1, 1]], 0.5]})", 64, kMaxJsonDepth);
  ASSERT_TRUE(scanned);
  EXPECT_EQ(scanned->sizes, (std::vector<std::uint32_t>{2, 4, 1}));
  EXPECT_EQ(scanned->pixels.size(), 7u);
}

TEST(PredictReplyJson, IsValidJsonWhoseProbabilitiesReadBackAsTheSameFloats) {
  PredictResult result;
  result.model_id = "m";
  result.version = 3;
  result.class_idxs = {1, 0};
  result.class_tags = {"T-shirt/top", "a \"quoted\" class"};
  result.probabilities = {{0.1f, 0.9f, 1e-30f, 1.0f / 3.0f}, {0.7f, 0.2f, 0.05f, std::nanf("")}};
  const std::string text = predict_reply_json(result);
  ASSERT_EQ(text.back(), '\n');
  json out = json::parse(text);
  EXPECT_EQ(out["model_id"], "m");
  EXPECT_EQ(out["version"], 3);
  EXPECT_EQ(out["class_idxs"], json({1, 0}));
  EXPECT_EQ(out["class_tags"][1], "a \"quoted\" class");
  for (std::size_t i = 0; i < 2; ++i) {
    for (std::size_t j = 0; j < 3; ++j) {
      EXPECT_EQ(static_cast<float>(out["probabilities"][i][j].get<double>()), result.probabilities[i][j]);
    }
  }
  EXPECT_TRUE(out["probabilities"][1][3].is_null()) << "a NaN is written as the JSON library writes it";
}

}  // namespace
}  // namespace mlswarm
