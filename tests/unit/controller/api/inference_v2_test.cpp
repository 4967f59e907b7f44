#include "inference_v2.h"

#include <gtest/gtest.h>

#include <cstring>

#include "mlswarm/error.h"

namespace mlswarm::v2 {
namespace {

using nlohmann::json;

ModelMeta tiny_meta() {
  ModelMeta meta;
  meta.model_id = "m";
  meta.channels = 1;
  meta.height = 2;
  meta.width = 2;
  meta.class_names = {"a", "b", "c"};
  meta.version = 4;
  return meta;
}

HttpRequest json_request(const json& body) {
  HttpRequest r;
  r.method = "POST";
  r.path = "/v2/models/m/infer";
  r.body = body.dump();
  r.headers.emplace("content-type", "application/json");
  return r;
}

json input(const json& data, const std::string& datatype = "FP32", const json& shape = {1, 1, 2, 2}) {
  return {{"inputs", {{{"name", "x"}, {"shape", shape}, {"datatype", datatype}, {"data", data}}}}};
}

TEST(InferenceV2, ParsesFlatNestedAndUint8Data) {
  const ModelMeta meta = tiny_meta();
  auto flat = parse_infer(json_request(input({0.0, 0.25, 0.5, 1.0})), meta, 10);
  EXPECT_EQ(flat.count, 1);
  EXPECT_EQ(flat.pixels, (std::vector<float>{0.0F, 0.25F, 0.5F, 1.0F}));
  auto nested = parse_infer(json_request(input({{{{0.0, 0.25}, {0.5, 1.0}}}})), meta, 10);
  EXPECT_EQ(nested.pixels, flat.pixels);
  auto bytes = parse_infer(json_request(input({0, 51, 255, 0}, "UINT8")), meta, 10);
  EXPECT_FLOAT_EQ(bytes.pixels[1], 0.2F);
  EXPECT_FLOAT_EQ(bytes.pixels[2], 1.0F);
}

TEST(InferenceV2, RefusesWhatDoesNotFitTheModel) {
  const ModelMeta meta = tiny_meta();
  auto refused = [&](const json& body) {
    try {
      parse_infer(json_request(body), meta, 2);
    } catch (const Error& e) {
      return e.code() == ErrorCode::kInvalidArgument || e.code() == ErrorCode::kPayloadTooLarge;
    }
    return false;
  };
  EXPECT_TRUE(refused(input({0, 0, 0}, "FP32")));                    // too few values
  EXPECT_TRUE(refused(input({0, 0, 0, 0, 0}, "FP32")));              // too many
  EXPECT_TRUE(refused(input({0, 0, 0, 2.0}, "FP32")));               // outside 0..1
  EXPECT_TRUE(refused(input({0, 0, 0, 256}, "UINT8")));              // outside 0..255
  EXPECT_TRUE(refused(input({0, 0, 0, 0}, "FP64")));                 // datatype
  EXPECT_TRUE(refused(input({0, 0, 0, 0}, "FP32", {1, 2, 2, 1})));   // shape
  EXPECT_TRUE(refused(input(json::array(), "FP32", {3, 1, 2, 2})));  // batch past the limit
  EXPECT_TRUE(refused(json{{"inputs", json::array()}}));
  json unknown_output = input({0, 0, 0, 0});
  unknown_output["outputs"] = {{{"name", "logits"}}};
  EXPECT_TRUE(refused(unknown_output));
}

TEST(InferenceV2, BinaryInputAndOutputFollowTheExtension) {
  const ModelMeta meta = tiny_meta();
  const float pixels[4] = {0.0F, 0.5F, 0.75F, 1.0F};
  json header = {
      {"inputs",
       {{{"name", "x"}, {"shape", {1, 1, 2, 2}}, {"datatype", "FP32"}, {"parameters", {{"binary_data_size", 16}}}}}},
      {"parameters", {{"binary_data_output", true}}}};
  HttpRequest r;
  r.body = header.dump();
  r.headers.emplace("inference-header-content-length", std::to_string(r.body.size()));
  r.body.append(reinterpret_cast<const char*>(pixels), sizeof pixels);
  auto parsed = parse_infer(r, meta, 10);
  EXPECT_EQ(parsed.pixels, std::vector<float>(pixels, pixels + 4));

  PredictResult result{"m", 4, {2}, {"c"}, {{0.1F, 0.2F, 0.7F}}};
  HttpReply reply = infer_reply(parsed, result, meta);
  ASSERT_EQ(reply.headers.count(kHeaderLength), 1u);
  const auto length = std::stoul(reply.headers[kHeaderLength]);
  json out = json::parse(reply.body.substr(0, length));
  EXPECT_EQ(out["model_version"], "4");
  EXPECT_EQ(out["outputs"][0]["parameters"]["binary_data_size"], 12);
  EXPECT_EQ(out["outputs"][1]["parameters"]["binary_data_size"], 8);
  ASSERT_EQ(reply.body.size(), length + 20);
  float third = 0;
  std::memcpy(&third, reply.body.data() + length + 8, 4);
  EXPECT_FLOAT_EQ(third, 0.7F);
  std::int64_t idx = 0;
  std::memcpy(&idx, reply.body.data() + length + 12, 8);
  EXPECT_EQ(idx, 2);

  r.headers.clear();
  r.headers.emplace("inference-header-content-length", std::to_string(r.body.size() + 1));
  EXPECT_THROW(parse_infer(r, meta, 10), Error);  // the header's length past the body
}

TEST(InferenceV2, ClassificationGivesTheTopKLabelsBestFirst) {
  const ModelMeta meta = tiny_meta();
  json body = input({0, 0, 0, 0});
  body["outputs"] = {{{"name", "probabilities"}, {"parameters", {{"classification", 2}}}}};
  auto parsed = parse_infer(json_request(body), meta, 10);
  PredictResult result{"m", 4, {2}, {"c"}, {{0.1F, 0.2F, 0.7F}}};
  json out = json::parse(infer_reply(parsed, result, meta).body);
  EXPECT_EQ(out["outputs"][0]["datatype"], "BYTES");
  EXPECT_EQ(out["outputs"][0]["shape"], json({1, 2}));
  EXPECT_EQ(out["outputs"][0]["data"], json({"0.700000:2:c", "0.200000:1:b"}));
}

TEST(InferenceV2, ErrorsTakeTheProtocolsShape) {
  HttpReply ours = HttpReply::error(Error(ErrorCode::kNotFound, "unknown model 'x'", "model_id"));
  HttpReply theirs = reshape_error(ours);
  EXPECT_EQ(theirs.status, 404);
  EXPECT_EQ(json::parse(theirs.body), json({{"error", "unknown model 'x'"}}));
  EXPECT_THROW(parse_version("0"), Error);
  EXPECT_THROW(parse_version("abc"), Error);
  EXPECT_EQ(parse_version("12"), 12);
}

}  // namespace
}  // namespace mlswarm::v2
