#pragma once

#include <cstdint>
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
/// The default pixel area /classify decodes at most (MAX_IMAGE_PIXELS): 2048 x 2048. The area
/// the file declares is checked before anything is decoded: a 130 KB 16-bit RGBA PNG declaring
/// 4096 x 4096 cost 264 MB to decode.
inline constexpr std::int64_t kDefaultMaxImagePixels = std::int64_t{2048} * 2048;

/// Also throws Error(kInvalidArgument) for an image whose declared width x height is over
/// `max_pixels`, before decoding it.
std::vector<float> decode_image(const std::string& bytes, int channels, int height, int width,
                                std::int64_t max_pixels = kDefaultMaxImagePixels);

/// The same as bytes (0..255), [C][H][W]: a folder dataset's images, decoded once.
std::vector<std::uint8_t> decode_image_bytes(const std::string& bytes, int channels, int height, int width,
                                             std::int64_t max_pixels = kDefaultMaxImagePixels);

/// What an image's header declares, read without decoding it.
struct ImageHeader {
  int width = 0;
  int height = 0;
  int channels = 0;  ///< as stored: 1 grey, 2 grey and alpha, 3 colour, 4 colour and alpha
};
/// Throws as decode_image for bytes that are not a PNG, JPEG or BMP or whose header is broken.
ImageHeader read_image_header(const std::string& bytes);

}  // namespace mlswarm
