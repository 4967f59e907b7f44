// POST /predict bodies: JSON text -> parse_json_body -> flatten_examples for a 1x28x28 or a
// 3x32x32 model (the first byte picks), as the route does before anything reaches LibTorch.

#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "mlswarm/error.h"
#include "mlswarm/http.h"
#include "predict_input.h"

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
  try {
    nlohmann::json body = parse_json_body(request);
    if (!body.is_object() || !body.contains("examples")) return 0;
    std::vector<float> pixels = flatten_examples(body["examples"], meta, 64);
    const std::size_t chw = static_cast<std::size_t>(meta.channels) * meta.height * meta.width;
    if (pixels.size() != body["examples"].size() * chw) __builtin_trap();
    for (float p : pixels) {
      if (!(p >= 0.0f && p <= 1.0f)) __builtin_trap();
    }
  } catch (const Error&) {
  }
  return 0;
}
