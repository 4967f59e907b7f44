#include "image_decode.h"

#include <memory>

#include <fmt/format.h>
#include <stb_image.h>
#include <stb_image_resize.h>
#include <turbojpeg.h>

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

void check_size(int w, int h) {
  if (w <= 0 || h <= 0 || w > kMaxImageSide || h > kMaxImageSide) {
    throw Error(ErrorCode::kInvalidArgument,
                fmt::format("image of {} x {} pixels is outside 1..{} per side", w, h, kMaxImageSide), "image");
  }
}

/// PNG and BMP through stb_image.
std::vector<unsigned char> decode_png_or_bmp(const std::string& bytes, bool bmp, int want, int& w, int& h) {
  int n = 0;
  const auto* data = reinterpret_cast<const stbi_uc*>(bytes.data());
  if (!stbi_info_from_memory(data, static_cast<int>(bytes.size()), &w, &h, &n)) {
    throw Error(ErrorCode::kInvalidArgument, fmt::format("the image does not decode: {}", stbi_failure_reason()),
                "image");
  }
  check_size(w, h);
  // Found by fuzz_image: a 29-byte BMP header claiming 7680 x 7680 pixels decoded (stb fills
  // what is missing) and took seconds of CPU to resize. BMPs are not compressed (stb reads
  // no RLE), so a real one holds at least one bit per pixel.
  if (bmp && bytes.size() < static_cast<std::size_t>(w) * static_cast<std::size_t>(h) / 8) {
    throw Error(ErrorCode::kInvalidArgument,
                fmt::format("the BMP claims {} x {} pixels but holds only {} bytes", w, h, bytes.size()), "image");
  }
  std::unique_ptr<stbi_uc, void (*)(void*)> pixels(
      stbi_load_from_memory(data, static_cast<int>(bytes.size()), &w, &h, &n, want), stbi_image_free);
  if (!pixels) {
    throw Error(ErrorCode::kInvalidArgument, fmt::format("the image does not decode: {}", stbi_failure_reason()),
                "image");
  }
  return {pixels.get(), pixels.get() + static_cast<std::size_t>(w) * h * want};
}

/// JPEG through libjpeg-turbo. Found by fuzz_image: Debian's stb_image 2.27 writes past a
/// Huffman table for a crafted DHT segment and reads before one in progressive decoding;
/// libjpeg-turbo is fuzzed continuously upstream. Scans are limited (TJFLAG_LIMITSCANS), so
/// a progressive file with thousands of scans cannot hold a thread for long.
std::vector<unsigned char> decode_jpeg(const std::string& bytes, int want, int& w, int& h) {
  std::unique_ptr<void, int (*)(tjhandle)> tj(tjInitDecompress(), tjDestroy);
  if (!tj) throw Error(ErrorCode::kInternal, "cannot start the JPEG decoder");
  const auto* data = reinterpret_cast<const unsigned char*>(bytes.data());
  const auto size = static_cast<unsigned long>(bytes.size());
  int subsampling = 0;
  int colorspace = 0;
  if (tjDecompressHeader3(tj.get(), data, size, &w, &h, &subsampling, &colorspace) != 0) {
    throw Error(ErrorCode::kInvalidArgument, fmt::format("the JPEG does not decode: {}", tjGetErrorStr2(tj.get())),
                "image");
  }
  check_size(w, h);
  std::vector<unsigned char> pixels(static_cast<std::size_t>(w) * h * want);
  const int format = want == 1 ? TJPF_GRAY : TJPF_RGB;
  if (tjDecompress2(tj.get(), data, size, pixels.data(), w, 0, h, format, TJFLAG_LIMITSCANS) != 0 &&
      tjGetErrorCode(tj.get()) != TJERR_WARNING) {  // a warning (say, data cut short) still gives an image
    throw Error(ErrorCode::kInvalidArgument, fmt::format("the JPEG does not decode: {}", tjGetErrorStr2(tj.get())),
                "image");
  }
  return pixels;
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
  const int want = channels == 1 ? 1 : 3;
  int w = 0;
  int h = 0;
  std::vector<unsigned char> pixels = jpeg ? decode_jpeg(bytes, want, w, h) : decode_png_or_bmp(bytes, bmp, want, w, h);
  std::vector<unsigned char> resized(static_cast<std::size_t>(width) * height * want);
  if (!stbir_resize_uint8(pixels.data(), w, h, 0, resized.data(), width, height, 0, want)) {
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
