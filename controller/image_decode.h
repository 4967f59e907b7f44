#pragma once

#include <string>
#include <vector>

namespace mlswarm {

/// Decodes a PNG, JPEG or BMP image (the first bytes decide, not the file name) and converts
/// it to a model's input: `channels` (1: luminance, 3: RGB), resized to height x width, as
/// [C][H][W] floats in 0..1. Throws Error(kUnsupportedMediaType) for bytes that are not one
/// of those formats and Error(kInvalidArgument) for an image that does not decode or is
/// larger than kMaxImageSide on a side.
/// The largest image side /classify accepts (a 16-megapixel decode and resize at most).
inline constexpr int kMaxImageSide = 4096;

std::vector<float> decode_image(const std::string& bytes, int channels, int height, int width);

}  // namespace mlswarm
