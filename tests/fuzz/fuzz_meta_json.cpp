// HOME_DIR/models/<id>/meta.json as serving reads it: text -> JSON -> model_meta_from_json,
// then a prediction body shaped by whatever the file claims, so that a hostile or broken
// meta.json cannot make the controller allocate or index wrongly.

#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "mlswarm/error.h"
#include "mlswarm/model_meta.h"
#include "predict_input.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace mlswarm;
  nlohmann::json j = nlohmann::json::parse(data, data + size, nullptr, false);
  if (j.is_discarded()) return 0;
  try {
    ModelMeta meta = model_meta_from_json(j);
    ModelMeta again = model_meta_from_json(to_json(meta));
    if (again.channels != meta.channels || again.class_names != meta.class_names) __builtin_trap();
    const std::size_t chw = static_cast<std::size_t>(meta.channels) * meta.height * meta.width;
    if (chw <= 4096) {
      nlohmann::json example = nlohmann::json::array();
      for (std::size_t i = 0; i < chw; ++i) example.push_back(0.5);
      std::vector<float> pixels = flatten_examples(nlohmann::json::array({example}), meta, 4);
      if (pixels.size() != chw) __builtin_trap();
    }
  } catch (const Error&) {
  }
  return 0;
}
