// /classify uploads: image bytes (PNG, JPEG, BMP or anything else) -> decode_image, which
// decodes with stb_image, converts channels and resizes to the model's input.

#include <cstdint>
#include <string>

#include "mlswarm/image_decode.h"
#include "mlswarm/error.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace mlswarm;
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  for (int channels : {1, 3}) {
    try {
      std::vector<float> pixels = decode_image(bytes, channels, 28, 28);
      if (pixels.size() != static_cast<std::size_t>(channels) * 28 * 28) __builtin_trap();
    } catch (const Error&) {
    }
  }
  return 0;
}
