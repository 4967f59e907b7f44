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

bool jpeg_huffman_tables_fit(std::string_view b) {
  auto at = [&](std::size_t k) { return static_cast<unsigned char>(b[k]); };
  std::size_t i = 2;  // after SOI
  while (i + 1 < b.size()) {
    if (at(i) != 0xFF) {  // stb skips stray bytes between segments one at a time
      ++i;
      continue;
    }
    const unsigned char marker = at(i + 1);
    if (marker == 0xFF || marker == 0x01 || marker == 0xD8 || (marker >= 0xD0 && marker <= 0xD7)) {
      i += marker == 0xFF ? 1 : 2;  // fill byte, or a marker without a length
      continue;
    }
    if (marker == 0xD9 || i + 3 >= b.size()) return true;  // EOI, or cut short (stb refuses that)
    const std::size_t end = i + 2 + ((std::size_t{at(i + 2)} << 8) | at(i + 3));
    if (marker == 0xC4) {
      // As stb reads a DHT segment: tables of class/id, 16 counts, then sum(counts) values.
      // Past the end of the file stb reads zeros, so a table cut short still counts.
      for (std::size_t p = i + 4; p < end && p < b.size();) {
        const unsigned q = at(p);
        if ((q >> 4) > 1 || (q & 15) > 3) break;  // stb stops with "bad DHT header" here
        std::size_t n = 0;
        for (std::size_t k = p + 1; k <= p + 16 && k < b.size(); ++k) n += at(k);
        if (n > 256) return false;
        p += 17 + n;
      }
    }
    i = end;
    if (marker == 0xDA) {  // after a scan header comes entropy-coded data up to the next marker
      while (i + 1 < b.size() &&
             !(at(i) == 0xFF && at(i + 1) != 0x00 && !(at(i + 1) >= 0xD0 && at(i + 1) <= 0xD7))) {
        ++i;
      }
    }
  }
  return true;
}

std::vector<float> decode_image(const std::string& bytes, int channels, int height, int width) {
  const bool png = starts_with(bytes, {0x89, 'P', 'N', 'G'});
  const bool jpeg = starts_with(bytes, {0xFF, 0xD8, 0xFF});
  const bool bmp = starts_with(bytes, {'B', 'M'});
  if (!png && !jpeg && !bmp) {
    throw Error(ErrorCode::kUnsupportedMediaType, "the upload is not a PNG, JPEG or BMP image", "image");
  }
  if (bytes.size() > (64u << 20)) throw Error(ErrorCode::kInvalidArgument, "image too large", "image");
  if (jpeg && !jpeg_huffman_tables_fit(bytes)) {
    throw Error(ErrorCode::kInvalidArgument, "the JPEG's Huffman table holds more than 256 codes", "image");
  }
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
