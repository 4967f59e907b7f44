// POST /predict bodies: JSON text -> parse_json_body -> flatten_examples for a 1x28x28 or a
// 3x32x32 model (the first byte picks), as the route does before anything reaches LibTorch.
// And the fast path against it: whatever scan_predict_body accepts, the full parser accepts
// too, with the same model id, version and, example by example, the very same floats.

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "mlswarm/error.h"
#include "mlswarm/http.h"
#include "predict_input.h"

namespace {

using namespace mlswarm;

// Example i of the full parse, flattened on its own, holds exactly the n floats the fast path
// read for it at `offset`.
void expect_same_example(const nlohmann::json& example, std::uint32_t n, const ScannedPredict& scanned,
                         std::size_t offset) {
  ModelMeta one;
  one.model_id = "m";
  one.height = 1;
  one.width = static_cast<int>(n);
  std::vector<float> pixels;
  try {
    pixels = flatten_examples(nlohmann::json::array({example}), one, 1);
  } catch (const Error&) {
    __builtin_trap();  // an example the fast path read and the full path refuses
  }
  if (pixels.size() != n || std::memcmp(pixels.data(), scanned.pixels.data() + offset, n * sizeof(float)) != 0) {
    __builtin_trap();
  }
}

// Whatever scan_predict_body accepted, the full parser accepts too, with the same model id,
// version and floats.
void expect_full_parser_agrees(const HttpRequest& request, const ScannedPredict& scanned) {
  nlohmann::json full;
  try {
    full = parse_json_body(request);
  } catch (const Error&) {
    __builtin_trap();  // the fast path took a body the full parser refuses
  }
  if (!full.is_object() || full.value("model_id", nlohmann::json()) != scanned.model_id) __builtin_trap();
  const nlohmann::json version = full.value("version", nlohmann::json());
  if ((version.is_null() ? 0 : version.get<int>()) != scanned.version) __builtin_trap();
  const nlohmann::json& examples = full.at("examples");
  if (examples.size() != scanned.sizes.size()) __builtin_trap();
  std::size_t offset = 0;
  for (std::size_t i = 0; i < examples.size(); ++i) {
    const std::uint32_t n = scanned.sizes[i];
    if (n > 0) expect_same_example(examples[i], n, scanned, offset);
    offset += n;
  }
  if (offset != scanned.pixels.size()) __builtin_trap();
}

// The route's full path: parse_json_body -> flatten_examples, every pixel in 0..1.
void check_full_path(const HttpRequest& request, const ModelMeta& meta) {
  try {
    nlohmann::json body = parse_json_body(request);
    if (!body.is_object() || !body.contains("examples")) return;
    std::vector<float> pixels = flatten_examples(body["examples"], meta, 64);
    const std::size_t chw = static_cast<std::size_t>(meta.channels) * meta.height * meta.width;
    if (pixels.size() != body["examples"].size() * chw) __builtin_trap();
    for (float p : pixels) {
      if (!(p >= 0.0f && p <= 1.0f)) __builtin_trap();
    }
  } catch (const Error&) {
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace mlswarm;
  if (size == 0) return 0;
  ModelMeta meta;
  meta.model_id = "m";
  if (data[0] & 1) {
    meta.channels = 3;
    meta.height = 32;
    meta.width = 32;
  }
  HttpRequest request;
  request.method = "POST";
  request.path = "/predict";
  request.body.assign(reinterpret_cast<const char*>(data) + 1, size - 1);
  const auto scanned = scan_predict_body(request.body, 64, kMaxJsonDepth);
  if (scanned) expect_full_parser_agrees(request, *scanned);
  check_full_path(request, meta);
  return 0;
}
