#pragma once

#include <cstddef>
#include <vector>

#include <nlohmann/json.hpp>

#include "mlswarm/model_meta.h"

namespace mlswarm {

/// Turns `examples` (each [C][H][W], [H][W] or flat C*H*W numbers in 0..1) into one flat
/// vector for `meta`'s input shape. Throws Error(kInvalidArgument, "examples") naming the
/// first offending example, and Error(kPayloadTooLarge) for more than `max_examples`.
std::vector<float> flatten_examples(const nlohmann::json& examples, const ModelMeta& meta,
                                    std::size_t max_examples);

}  // namespace mlswarm
