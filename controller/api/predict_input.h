#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "batcher.h"
#include "mlswarm/model_meta.h"

namespace mlswarm {

/// Turns `examples` (each [C][H][W], [H][W] or flat C*H*W numbers in 0..1) into one flat
/// vector for `meta`'s input shape. Throws Error(kInvalidArgument, "examples") naming the
/// first offending example, and Error(kPayloadTooLarge) for more than `max_examples`.
std::vector<float> flatten_examples(const nlohmann::json& examples, const ModelMeta& meta, std::size_t max_examples);

/// A /predict body read by scan_predict_body.
struct ScannedPredict {
  std::string model_id;
  int version = 0;                   ///< 0: absent or null (the latest)
  std::vector<float> pixels;         ///< every example's numbers, depth-first, in 0..1
  std::vector<std::uint32_t> sizes;  ///< how many numbers each example holds
};

/// The fast path of /predict: one pass over the text of the usual body,
/// {"model_id": "...", "examples": [...], "version": n|null} in any order, numbers read with
/// std::from_chars into the same floats the JSON parser gives. Returns nullopt for anything
/// else (another key, an escape in a string, a value out of 0..1, an unusual number, a
/// duplicate key, malformed JSON, nesting deeper than `max_depth`, more than
/// `max_examples`, more than `max_values` numbers): the caller then takes the full parser, which
/// has the precise error message. Accepts only bodies the full parser accepts and reads them the
/// same way.
/// `too_many` (when given) is set when the scan stopped at `max_values`: the body is refused
/// then, without a second parse.
std::optional<ScannedPredict> scan_predict_body(std::string_view body, std::size_t max_examples, int max_depth,
                                                std::size_t max_values = SIZE_MAX, bool* too_many = nullptr);

/// The JSON reply of /predict, written directly: {"model_id", "version", "class_idxs",
/// "class_tags", "probabilities"}. Each probability is the shortest text that reads back as
/// the same float.
/// `deployment` and `variant` (when not empty) are added: the served name that answered and
/// whether its stable or its candidate did.
std::string predict_reply_json(const PredictResult& result, const std::string& deployment = {},
                               const std::string& variant = {});

}  // namespace mlswarm
