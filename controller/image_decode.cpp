#include "image_decode.h"

#include <memory>

#include <fmt/format.h>
#include <stb_image.h>
#include <stb_image_resize.h>

#include "mlswarm/error.h"

namespace mlswarm {
namespace {

bool starts_with(const std::string& bytes, std::initializer_list<unsigned char> magic) {
  if (bytes.size() < magic.size()) return false;
  std::size_t i = 0;
  for (unsigned char c : magic) {
    if (static_cast<unsigned char>(bytes[i++]) != c) return false;
  }
  return true;
}

}  // namespace

std::vector<float> decode_image(const std::string& bytes, int channels, int height, int width) {
  const bool png = starts_with(bytes, {0x89, 'P', 'N', 'G'});
  const bool jpeg = starts_with(bytes, {0xFF, 0xD8, 0xFF});
  const bool bmp = starts_with(bytes, {'B', 'M'});
  if (!png && !jpeg && !bmp) {
    throw Error(ErrorCode::kUnsupportedMediaType, "the upload is not a PNG, JPEG or BMP image", "image");
  }
  if (bytes.size() > (64u << 20)) throw Error(ErrorCode::kInvalidArgument, "image too large", "image");
  int w = 0, h = 0, n = 0;
  const auto* data = reinterpret_cast<const stbi_uc*>(bytes.data());
  if (!stbi_info_from_memory(data, static_cast<int>(bytes.size()), &w, &h, &n)) {
    throw Error(ErrorCode::kInvalidArgument,
                fmt::format("the image does not decode: {}", stbi_failure_reason()), "image");
  }
  if (w <= 0 || h <= 0 || w > kMaxImageSide || h > kMaxImageSide) {
    throw Error(ErrorCode::kInvalidArgument,
                fmt::format("image of {} x {} pixels is outside 1..{} per side", w, h, kMaxImageSide), "image");
  }
  // Found by fuzz_image: a 29-byte BMP header claiming 7680 x 7680 pixels decoded (stb fills
  // what is missing) and took seconds of CPU to resize. BMPs are not compressed (stb reads
  // no RLE), so a real one holds at least one bit per pixel.
  if (bmp && bytes.size() < static_cast<std::size_t>(w) * static_cast<std::size_t>(h) / 8) {
    throw Error(ErrorCode::kInvalidArgument,
                fmt::format("the BMP claims {} x {} pixels but holds only {} bytes", w, h, bytes.size()), "image");
  }
  const int want = channels == 1 ? 1 : 3;
  std::unique_ptr<stbi_uc, void (*)(void*)> pixels(
      stbi_load_from_memory(data, static_cast<int>(bytes.size()), &w, &h, &n, want), stbi_image_free);
  if (!pixels) {
    throw Error(ErrorCode::kInvalidArgument,
                fmt::format("the image does not decode: {}", stbi_failure_reason()), "image");
  }
  std::vector<unsigned char> resized(static_cast<std::size_t>(width) * height * want);
  if (!stbir_resize_uint8(pixels.get(), w, h, 0, resized.data(), width, height, 0, want)) {
    throw Error(ErrorCode::kInvalidArgument, "the image could not be resized", "image");
  }
  // Interleaved HWC bytes to planar CHW floats.
  std::vector<float> out(static_cast<std::size_t>(channels) * height * width);
  for (int c = 0; c < channels; ++c) {
    for (int i = 0; i < height * width; ++i) {
      out[static_cast<std::size_t>(c) * height * width + i] = resized[static_cast<std::size_t>(i) * want + (want == 1 ? 0 : c)] / 255.0f;
    }
  }
  return out;
}

}  // namespace mlswarm
