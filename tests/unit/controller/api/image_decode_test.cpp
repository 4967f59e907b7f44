#include "mlswarm/image_decode.h"

#include <gtest/gtest.h>

#include <sys/resource.h>
#include <zlib.h>

#include <chrono>
#include <fstream>
#include <iterator>
#include <string>

#include "../../../support/error_code.h"
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
  return testing::thrown_code([&] { decode_image(bytes, 1, 28, 28); });  // kInternal: decoded
}

TEST(DecodeImage, DecodesASmallBmpToTheModelShape) {
  std::vector<float> pixels = decode_image(bmp_24bit(2, 2, 16), 1, 28, 28);
  ASSERT_EQ(pixels.size(), 28u * 28u);
  EXPECT_NEAR(pixels[0], 128 / 255.0, 0.01);
}

// Found by fuzz_image: a header that claims 7680 x 7680 pixels over 29 bytes took seconds
// to decode and resize. It is refused before decoding, at once.
TEST(DecodeImage, RefusesBmpsThatClaimMorePixelsThanTheyHold) {
  const std::string bomb(
      "BMF\0\0\0\0\x04\0\0"
      "3\0\0\0(\0\0\0\0\x1e\0\0\0\x1e\0\0\x01\0\x08",
      29);
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

std::string png_chunk(const char* type, const std::string& data) {
  auto be32 = [](std::uint32_t v) {
    return std::string{static_cast<char>(v >> 24), static_cast<char>(v >> 16), static_cast<char>(v >> 8),
                       static_cast<char>(v)};
  };
  std::string body = std::string(type, 4) + data;
  return be32(static_cast<std::uint32_t>(data.size())) + body +
         be32(static_cast<std::uint32_t>(
             crc32(0, reinterpret_cast<const Bytef*>(body.data()), static_cast<uInt>(body.size()))));
}

/// `raw` followed by `zeros` zero bytes, deflated in pieces (the zeros never sit in memory).
std::string deflated(const std::string& raw, std::size_t zeros = 0) {
  z_stream z{};
  deflateInit(&z, 9);
  std::string out;
  const std::string block(1 << 20, '\0');
  unsigned char buffer[1 << 16];
  auto feed = [&](const std::string& data, std::size_t n, int flush) {
    z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
    z.avail_in = static_cast<uInt>(n);
    do {
      z.next_out = buffer;
      z.avail_out = sizeof buffer;
      deflate(&z, flush);
      out.append(reinterpret_cast<char*>(buffer), sizeof buffer - z.avail_out);
    } while (z.avail_out == 0 || z.avail_in > 0);
  };
  feed(raw, raw.size(), Z_NO_FLUSH);
  for (; zeros > 0; zeros -= std::min(zeros, block.size())) feed(block, std::min(zeros, block.size()), Z_NO_FLUSH);
  feed(block, 0, Z_FINISH);
  deflateEnd(&z);
  return out;
}

/// A grey 8-bit PNG of w x h whose image data is `raw` (filter bytes included) and then
/// `zeros` zero bytes, deflated; `cinfo` >= 0 rewrites the zlib header's window size (CINFO).
std::string png_with_raw(int w, int h, bool interlaced, const std::string& raw, std::size_t zeros = 0, int cinfo = -1) {
  std::string out = deflated(raw, zeros);
  if (cinfo >= 0) {
    // CMF = CINFO << 4 | 8 (deflate); FLG makes CMF * 256 + FLG a multiple of 31, as zlib wants.
    const unsigned cmf = static_cast<unsigned>(cinfo) << 4 | 8;
    unsigned flg = static_cast<unsigned char>(out[1]) & 0xE0;
    flg += 31 - (cmf * 256 + flg) % 31;
    out[0] = static_cast<char>(cmf);
    out[1] = static_cast<char>(flg);
  }
  std::string ihdr = png_chunk("IHDR", std::string{0, 0, 0, static_cast<char>(w), 0, 0, 0, static_cast<char>(h), 8, 0,
                                                   0, 0, static_cast<char>(interlaced ? 1 : 0)});
  return std::string("\x89PNG\r\n\x1a\n", 8) + ihdr + png_chunk("IDAT", out) + png_chunk("IEND", "");
}

long peak_rss_kib() {
  rusage usage{};
  ::getrusage(RUSAGE_SELF, &usage);
  return usage.ru_maxrss;
}

TEST(DecodeImage, APngBombIsRefusedAfterTheBytesItsHeaderImplies) {
  // 28 x 28 grey declares 28 * 29 = 812 bytes of image data; this one inflates to 256 MiB.
  const std::string bomb = png_with_raw(28, 28, false, "", std::size_t{256} << 20);
  ASSERT_LT(bomb.size(), 400u * 1024) << "a few hundred KB on the wire";
  const long before = peak_rss_kib();
  const auto started = std::chrono::steady_clock::now();
  try {
    decode_image(bomb, 1, 28, 28);
    FAIL() << "a decompression bomb decoded";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
    EXPECT_NE(std::string(e.what()).find("812 bytes"), std::string::npos) << e.what();
  }
  EXPECT_LT(peak_rss_kib() - before, 16 * 1024) << "the bomb must cost a small window, not its inflated size";
  EXPECT_LT(std::chrono::steady_clock::now() - started, std::chrono::seconds(2));
}

// Issue 38: a zlib header declaring an invalid window size (CINFO=8) made zlib refuse the
// stream, and the check then let the file pass to stb_image, which ignores that field and
// inflated all 256 MiB (+290 MB peak memory for a 28 x 28 PNG). Any stream zlib refuses is
// refused now, before stb sees it.
TEST(DecodeImage, APngBombWithAnInvalidWindowSizeIsRefused) {
  const std::string bomb = png_with_raw(28, 28, false, "", std::size_t{256} << 20, 8);
  const long before = peak_rss_kib();
  try {
    decode_image(bomb, 1, 28, 28);
    FAIL() << "a decompression bomb with CINFO=8 decoded";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
    EXPECT_NE(std::string(e.what()).find("not a valid zlib stream"), std::string::npos) << e.what();
  }
  EXPECT_LT(peak_rss_kib() - before, 16 * 1024);
  // The same image with a valid window decodes; so zlib's own check is what refused it.
  std::string raw;
  for (int y = 0; y < 28; ++y) raw += '\0' + std::string(28, static_cast<char>(y));
  EXPECT_EQ(decode_image(png_with_raw(28, 28, false, raw, 0, 7), 1, 28, 28).size(), 784u);
  EXPECT_THROW(decode_image(png_with_raw(28, 28, false, raw, 0, 8), 1, 28, 28), Error);
}

TEST(DecodeImage, PlainAndInterlacedPngsOfExactlyTheirSizeDecode) {
  std::string raw;
  for (int y = 0; y < 28; ++y) raw += '\0' + std::string(28, static_cast<char>(y * 9));
  EXPECT_EQ(decode_image(png_with_raw(28, 28, false, raw), 1, 28, 28).size(), 784u);
  // Adam7: seven passes of sub-images, each row with its filter byte.
  std::string adam7;
  const int x0[7] = {0, 4, 0, 2, 0, 1, 0}, y0[7] = {0, 0, 4, 0, 2, 0, 1};
  const int dx[7] = {8, 8, 4, 4, 2, 2, 1}, dy[7] = {8, 8, 8, 4, 4, 2, 2};
  for (int p = 0; p < 7; ++p) {
    const int pw = (28 - x0[p] + dx[p] - 1) / dx[p];
    const int ph = (28 - y0[p] + dy[p] - 1) / dy[p];
    for (int y = 0; y < ph; ++y) adam7 += '\0' + std::string(static_cast<std::size_t>(pw), static_cast<char>(100));
  }
  std::vector<float> pixels = decode_image(png_with_raw(28, 28, true, adam7), 1, 28, 28);
  ASSERT_EQ(pixels.size(), 784u);
  EXPECT_NEAR(pixels[500], 100 / 255.0f, 1e-3);
  // One byte more than the header implies is refused before stb sees it.
  EXPECT_THROW(decode_image(png_with_raw(28, 28, false, raw + std::string(1024, '\0')), 1, 28, 28), Error);
}

}  // namespace
}  // namespace mlswarm
