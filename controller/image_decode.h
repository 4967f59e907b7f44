#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace mlswarm {

/// Decodes a PNG, JPEG or BMP image (the first bytes decide, not the file name) and converts
/// it to a model's input: `channels` (1: luminance, 3: RGB), resized to height x width, as
/// [C][H][W] floats in 0..1. Throws Error(kUnsupportedMediaType) for bytes that are not one
/// of those formats and Error(kInvalidArgument) for an image that does not decode or is
/// larger than kMaxImageSide on a side.
/// False when a DHT segment of the JPEG declares more than 256 codes in one table. stb_image
/// 2.27 (Debian 12's) writes one byte past its table for such a file (found by fuzz_image;
/// upstream refuses it since 2.28), so decode_image refuses it before stb sees it. Walks the
/// segments as stb does, skipping entropy-coded data.
bool jpeg_huffman_tables_fit(std::string_view jpeg);

/// The largest image side /classify accepts (a 16-megapixel decode and resize at most).
inline constexpr int kMaxImageSide = 4096;

std::vector<float> decode_image(const std::string& bytes, int channels, int height, int width);

}  // namespace mlswarm
