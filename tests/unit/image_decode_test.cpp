#include "image_decode.h"

#include <gtest/gtest.h>

#include <chrono>
#include <fstream>
#include <iterator>
#include <string>

#include "mlswarm/error.h"

namespace mlswarm {
namespace {

std::string bmp_24bit(int width, int height, std::size_t pixel_bytes) {
  auto le = [](std::string& out, std::uint32_t v, int n) {
    for (int i = 0; i < n; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
  };
  std::string out = "BM";
  le(out, static_cast<std::uint32_t>(54 + pixel_bytes), 4);
  le(out, 0, 4);
  le(out, 54, 4);
  le(out, 40, 4);
  le(out, static_cast<std::uint32_t>(width), 4);
  le(out, static_cast<std::uint32_t>(height), 4);
  le(out, 1, 2);
  le(out, 24, 2);
  le(out, 0, 4);
  le(out, static_cast<std::uint32_t>(pixel_bytes), 4);
  le(out, 2835, 4);
  le(out, 2835, 4);
  le(out, 0, 4);
  le(out, 0, 4);
  out.append(pixel_bytes, '\x80');
  return out;
}

ErrorCode code_of(const std::string& bytes) {
  try {
    decode_image(bytes, 1, 28, 28);
  } catch (const Error& e) {
    return e.code();
  }
  return ErrorCode::kInternal;  // stands for "decoded"
}

TEST(DecodeImage, DecodesASmallBmpToTheModelShape) {
  std::vector<float> pixels = decode_image(bmp_24bit(2, 2, 16), 1, 28, 28);
  ASSERT_EQ(pixels.size(), 28u * 28u);
  EXPECT_NEAR(pixels[0], 128 / 255.0, 0.01);
}

// Found by fuzz_image: a header that claims 7680 x 7680 pixels over 29 bytes took seconds
// to decode and resize. It is refused before decoding, at once.
TEST(DecodeImage, RefusesBmpsThatClaimMorePixelsThanTheyHold) {
  const std::string bomb("BMF\0\0\0\0\x04\0\0" "3\0\0\0(\0\0\0\0\x1e\0\0\0\x1e\0\0\x01\0\x08", 29);
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(code_of(bomb), ErrorCode::kInvalidArgument);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::milliseconds(100));
  EXPECT_EQ(code_of(bmp_24bit(4000, 4000, 64)), ErrorCode::kInvalidArgument);
  EXPECT_EQ(code_of(bmp_24bit(kMaxImageSide + 1, 1, 3 * (kMaxImageSide + 1) + 3)), ErrorCode::kInvalidArgument);
  EXPECT_EQ(code_of("GIF89a"), ErrorCode::kUnsupportedMediaType);
}

std::string read_source_file(const std::string& relative) {
  std::ifstream in(std::string(MLSWARM_SOURCE_DIR) + "/" + relative, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

TEST(DecodeImage, DecodesBaselineAndProgressiveJpegs) {
  for (const char* name : {"rgb8x8.jpg", "grey8x8_progressive.jpg"}) {
    std::string jpeg = read_source_file(std::string("tests/fuzz/corpus/image/") + name);
    ASSERT_FALSE(jpeg.empty()) << name;
    EXPECT_EQ(decode_image(jpeg, 3, 28, 28).size(), 3u * 28 * 28) << name;
  }
}

// Found by fuzz_image (UBSan): Debian's stb_image 2.27 wrote past a Huffman table and read
// before one for these JPEGs; JPEGs now go to libjpeg-turbo, which refuses them with a 400
// or decodes what it can, and never touches memory it should not.
TEST(DecodeImage, CorruptJpegsAreRefusedOrDecodedNeverCrash) {
  for (const char* name : {"jpeg-dht-counts-over-256", "jpeg-dht-cut-short-over-256", "jpeg-progressive-huff-decode"}) {
    std::string jpeg = read_source_file(std::string("tests/fuzz/regressions/image/") + name);
    ASSERT_FALSE(jpeg.empty()) << name;
    try {
      EXPECT_EQ(decode_image(jpeg, 1, 28, 28).size(), 28u * 28u) << name;
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument) << name << ": " << e.what();
    }
  }
  EXPECT_EQ(code_of(std::string("\xFF\xD8\xFF\xC4\x00\x02", 6)), ErrorCode::kInvalidArgument);
}

}  // namespace
}  // namespace mlswarm
