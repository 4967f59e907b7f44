#include "mlswarm/image_decode.h"

#include <cstdint>
#include <memory>
#include <string_view>

#include <fmt/format.h>
#include <stb_image.h>
#include <stb_image_resize.h>
#include <turbojpeg.h>
#include <zlib.h>

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

void check_size(int w, int h, std::int64_t max_pixels) {
  if (w <= 0 || h <= 0 || w > kMaxImageSide || h > kMaxImageSide) {
    throw Error(ErrorCode::kInvalidArgument,
                fmt::format("image of {} x {} pixels is outside 1..{} per side", w, h, kMaxImageSide), "image");
  }
  if (std::int64_t{w} * h > max_pixels) {
    throw Error(ErrorCode::kInvalidArgument,
                fmt::format("image of {} x {} pixels is over the {} pixels this controller decodes (MAX_IMAGE_PIXELS)",
                            w, h, max_pixels),
                "image");
  }
}

std::uint32_t be32(const std::string& b, std::size_t at) {
  return (std::uint32_t{static_cast<unsigned char>(b[at])} << 24) |
         (std::uint32_t{static_cast<unsigned char>(b[at + 1])} << 16) |
         (std::uint32_t{static_cast<unsigned char>(b[at + 2])} << 8) |
         std::uint32_t{static_cast<unsigned char>(b[at + 3])};
}

/// The bytes a PNG's image data inflates to: each row of each (Adam7) pass, plus its filter byte.
std::uint64_t png_raw_size(std::uint64_t w, std::uint64_t h, int bits_per_pixel, bool interlaced) {
  auto rows = [&](std::uint64_t pw, std::uint64_t ph) { return ph * (1 + (pw * bits_per_pixel + 7) / 8); };
  if (!interlaced) return rows(w, h);
  static constexpr int kX[7] = {0, 4, 0, 2, 0, 1, 0}, kY[7] = {0, 0, 4, 0, 2, 0, 1};
  static constexpr int kDx[7] = {8, 8, 4, 4, 2, 2, 1}, kDy[7] = {8, 8, 8, 4, 4, 2, 2};
  std::uint64_t total = 0;
  for (int p = 0; p < 7; ++p) {
    const std::uint64_t pw = w > static_cast<std::uint64_t>(kX[p]) ? (w - kX[p] + kDx[p] - 1) / kDx[p] : 0;
    const std::uint64_t ph = h > static_cast<std::uint64_t>(kY[p]) ? (h - kY[p] + kDy[p] - 1) / kDy[p] : 0;
    if (pw > 0 && ph > 0) total += rows(pw, ph);
  }
  return total;
}

Error png_refused(const std::string& why) {
  return Error(ErrorCode::kInvalidArgument, "the PNG is refused: " + why, "image");
}

/// stb_image inflates a PNG's image data into a buffer that grows without bound and only
/// then compares it with the size the header implies, so a 2 MB PNG that declares 28 x 28
/// pixels could cost gigabytes (a decompression bomb). This inflates the image data first
/// into a small window, counting, and refuses the file as soon as it passes that size, and
/// refuses anything zlib refuses: stb_image's own inflater is laxer than zlib (it ignores the
/// header's window size, for one), so a stream zlib cannot check is a stream nobody checked
/// (issue 38: CINFO=8 in the zlib header, 256 MiB inflated from a 28 x 28 PNG).
void check_png_inflates_within_its_size(const std::string& bytes) {
  z_stream z{};
  if (inflateInit(&z) != Z_OK) throw Error(ErrorCode::kInternal, "cannot start zlib");
  std::unique_ptr<z_stream, int (*)(z_streamp)> guard(&z, inflateEnd);
  std::uint64_t expected = 0;
  std::uint64_t produced = 0;
  bool have_header = false;
  unsigned char window[64 * 1024];
  for (std::size_t pos = 8; pos + 12 <= bytes.size();) {
    const std::uint32_t length = be32(bytes, pos);
    if (length > bytes.size() - pos - 12) throw png_refused("a chunk runs past the end of the file");
    const std::string_view type(bytes.data() + pos + 4, 4);
    const auto* data = reinterpret_cast<const unsigned char*>(bytes.data() + pos + 8);
    if (type == "IHDR" && length >= 13) {
      static constexpr int kChannels[7] = {1, 0, 3, 1, 2, 0, 4};  // by colour type
      const int colour = data[9];
      const int channels = colour >= 0 && colour <= 6 ? kChannels[colour] : 0;
      if (channels == 0) throw png_refused("an unknown colour type");
      expected = png_raw_size(be32(bytes, pos + 8), be32(bytes, pos + 12), channels * data[8], data[12] != 0);
      have_header = true;
    } else if (type == "CgBI") {
      throw Error(ErrorCode::kInvalidArgument, "Apple's optimised PNG variant (CgBI) is not supported", "image");
    } else if (type == "IDAT") {
      if (!have_header) throw png_refused("image data before the header");
      z.next_in = const_cast<unsigned char*>(data);
      z.avail_in = length;
      while (z.avail_in > 0) {
        z.next_out = window;
        z.avail_out = sizeof window;
        const int rc = inflate(&z, Z_NO_FLUSH);
        produced += sizeof window - z.avail_out;
        if (produced > expected) {
          throw png_refused(fmt::format(
              "its image data inflates past the {} bytes its header implies (a decompression bomb?)", expected));
        }
        if (rc == Z_STREAM_END) return;
        if (rc != Z_OK) {
          throw png_refused(fmt::format("its image data is not a valid zlib stream ({})",
                                        z.msg != nullptr ? z.msg : "error " + std::to_string(rc)));
        }
      }
    } else if (type == "IEND") {
      break;
    }
    pos += 12 + length;
  }
  throw png_refused("its image data is missing or cut short");
}

/// PNG and BMP through stb_image.
std::vector<unsigned char> decode_png_or_bmp(const std::string& bytes, bool bmp, int want, int& w, int& h,
                                             std::int64_t max_pixels) {
  int n = 0;
  const auto* data = reinterpret_cast<const stbi_uc*>(bytes.data());
  if (!stbi_info_from_memory(data, static_cast<int>(bytes.size()), &w, &h, &n)) {
    throw Error(ErrorCode::kInvalidArgument, fmt::format("the image does not decode: {}", stbi_failure_reason()),
                "image");
  }
  check_size(w, h, max_pixels);
  if (!bmp) check_png_inflates_within_its_size(bytes);
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
std::vector<unsigned char> decode_jpeg(const std::string& bytes, int want, int& w, int& h, std::int64_t max_pixels) {
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
  check_size(w, h, max_pixels);
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

namespace {

enum class Format { kPng, kJpeg, kBmp };

Format sniff(const std::string& bytes) {
  if (starts_with(bytes, {0x89, 'P', 'N', 'G'})) return Format::kPng;
  if (starts_with(bytes, {0xFF, 0xD8, 0xFF})) return Format::kJpeg;
  if (starts_with(bytes, {'B', 'M'})) return Format::kBmp;
  throw Error(ErrorCode::kUnsupportedMediaType, "the upload is not a PNG, JPEG or BMP image", "image");
}

}  // namespace

ImageHeader read_image_header(const std::string& bytes) {
  const Format format = sniff(bytes);
  ImageHeader header;
  if (format == Format::kJpeg) {
    std::unique_ptr<void, int (*)(tjhandle)> tj(tjInitDecompress(), tjDestroy);
    if (!tj) throw Error(ErrorCode::kInternal, "cannot start the JPEG decoder");
    int subsampling = 0;
    int colorspace = 0;
    if (tjDecompressHeader3(tj.get(), reinterpret_cast<const unsigned char*>(bytes.data()),
                            static_cast<unsigned long>(bytes.size()), &header.width, &header.height, &subsampling,
                            &colorspace) != 0) {
      throw Error(ErrorCode::kInvalidArgument, fmt::format("the JPEG does not decode: {}", tjGetErrorStr2(tj.get())),
                  "image");
    }
    header.channels = colorspace == TJCS_GRAY ? 1 : 3;
    return header;
  }
  if (!stbi_info_from_memory(reinterpret_cast<const stbi_uc*>(bytes.data()), static_cast<int>(bytes.size()),
                             &header.width, &header.height, &header.channels)) {
    throw Error(ErrorCode::kInvalidArgument, fmt::format("the image does not decode: {}", stbi_failure_reason()),
                "image");
  }
  return header;
}

std::vector<std::uint8_t> decode_image_bytes(const std::string& bytes, int channels, int height, int width,
                                             std::int64_t max_pixels) {
  const Format format = sniff(bytes);
  if (bytes.size() > (64u << 20)) throw Error(ErrorCode::kInvalidArgument, "image too large", "image");
  const int want = channels == 1 ? 1 : 3;
  int w = 0;
  int h = 0;
  std::vector<unsigned char> pixels = format == Format::kJpeg
                                          ? decode_jpeg(bytes, want, w, h, max_pixels)
                                          : decode_png_or_bmp(bytes, format == Format::kBmp, want, w, h, max_pixels);
  std::vector<unsigned char> resized(static_cast<std::size_t>(width) * height * want);
  if (!stbir_resize_uint8(pixels.data(), w, h, 0, resized.data(), width, height, 0, want)) {
    throw Error(ErrorCode::kInvalidArgument, "the image could not be resized", "image");
  }
  // Interleaved HWC to planar CHW.
  std::vector<std::uint8_t> out(static_cast<std::size_t>(channels) * height * width);
  for (int c = 0; c < channels; ++c) {
    for (int i = 0; i < height * width; ++i) {
      out[static_cast<std::size_t>(c) * height * width + i] =
          resized[static_cast<std::size_t>(i) * want + (want == 1 ? 0 : c)];
    }
  }
  return out;
}

std::vector<float> decode_image(const std::string& bytes, int channels, int height, int width,
                                std::int64_t max_pixels) {
  const std::vector<std::uint8_t> planar = decode_image_bytes(bytes, channels, height, width, max_pixels);
  std::vector<float> out(planar.size());
  for (std::size_t i = 0; i < planar.size(); ++i) out[i] = planar[i] / 255.0f;
  return out;
}

}  // namespace mlswarm
