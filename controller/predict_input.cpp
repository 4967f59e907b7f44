#include "predict_input.h"

#include <cmath>

#include <fmt/format.h>

#include "mlswarm/error.h"

namespace mlswarm {

using nlohmann::json;

namespace {

/// Appends the numbers of one example, depth-first, checking each.
void flatten_into(const json& value, std::vector<float>& out, std::size_t example, std::size_t limit) {
  if (value.is_array()) {
    for (const auto& v : value) {
      flatten_into(v, out, example, limit);
      if (out.size() > limit) return;
    }
    return;
  }
  if (!value.is_number()) {
    throw Error(ErrorCode::kInvalidArgument, fmt::format("examples[{}] holds a non-number", example), "examples");
  }
  double x = value.get<double>();
  if (!std::isfinite(x) || x < 0.0 || x > 1.0) {
    throw Error(ErrorCode::kInvalidArgument,
                fmt::format("examples[{}] holds {}; pixel intensities must be in 0..1", example, x), "examples");
  }
  out.push_back(static_cast<float>(x));
}

}  // namespace

std::vector<float> flatten_examples(const json& examples, const ModelMeta& meta, std::size_t max_examples) {
  if (!examples.is_array()) throw Error(ErrorCode::kInvalidArgument, "examples must be a list", "examples");
  if (examples.empty()) throw Error(ErrorCode::kInvalidArgument, "examples is empty", "examples");
  if (examples.size() > max_examples) {
    throw Error(ErrorCode::kPayloadTooLarge,
                fmt::format("{} examples in one request; the limit is {}", examples.size(), max_examples), "examples");
  }
  const std::size_t chw = static_cast<std::size_t>(meta.channels) * meta.height * meta.width;
  std::vector<float> out;
  out.reserve(examples.size() * chw);
  for (std::size_t i = 0; i < examples.size(); ++i) {
    std::size_t before = out.size();
    flatten_into(examples[i], out, i, before + chw);
    if (out.size() - before != chw) {
      throw Error(ErrorCode::kInvalidArgument,
                  fmt::format("examples[{}] has {} values; model {} takes [{}][{}][{}] = {}", i,
                              out.size() - before > chw ? fmt::format("more than {}", chw)
                                                        : std::to_string(out.size() - before),
                              meta.model_id, meta.channels, meta.height, meta.width, chw),
                  "examples");
    }
  }
  return out;
}

}  // namespace mlswarm
