#include "serving_kernels.h"

#include <algorithm>
#include <cstring>

#include <ATen/Parallel.h>
#include <c10/util/Exception.h>

// Float8 values never cross a call boundary (every helper taking one is inlined), so the
// vector ABI warning about AVX arguments in the plain x86-64 clone does not apply.
#pragma GCC diagnostic ignored "-Wpsabi"

// The inner loops are compiled for AVX-512 and AVX2 too and picked at load time for the CPU
// that runs them (the images are built for any x86-64); elsewhere they are plain loops.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define MLSWARM_CPU_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define MLSWARM_CPU_CLONES
#endif

namespace mlswarm::serving {
namespace {

/// torch::maximum's answer: NaN when either is NaN.
inline float nan_max(float a, float b) { return (a > b || a != a) ? a : b; }

/// ReLU as LibTorch computes it: NaN stays NaN.
inline float relu_of(float v) { return (v > 0.0F || v != v) ? v : 0.0F; }

/// One output row of pooling: `width` pixels of `c` channels from two input rows.
MLSWARM_CPU_CLONES void pool_row(const float* __restrict top, const float* __restrict bottom, float* __restrict out,
                                 std::int64_t width, std::int64_t c, bool relu) {
  for (std::int64_t x = 0; x < width; ++x) {
    const float* a = top + 2 * x * c;
    const float* b = bottom + 2 * x * c;
    float* o = out + x * c;
    if (relu) {
      for (std::int64_t i = 0; i < c; ++i) o[i] = relu_of(nan_max(nan_max(a[i], a[c + i]), nan_max(b[i], b[c + i])));
    } else {
      for (std::int64_t i = 0; i < c; ++i) o[i] = nan_max(nan_max(a[i], a[c + i]), nan_max(b[i], b[c + i]));
    }
  }
}

/// A small-input convolution's shape: input channels, kernel size, padding, input height and
/// width, output channels, and the input's strides of channel, row and column.
struct ConvShape {
  std::int64_t in, k, pad, h, w, outs;
  std::int64_t sc, sh, sw;
};

/// One output row (row `y`, `width` pixels of s.outs channels) of a small-input convolution,
/// any channel count: each tap's weights added across the row, the row kept in L1.
MLSWARM_CPU_CLONES void conv_row(const float* __restrict image, const float* __restrict taps,
                                 const float* __restrict bias, float* __restrict out, std::int64_t y,
                                 std::int64_t width, const ConvShape& s) {
  const std::int64_t outs = s.outs;
  for (std::int64_t xo = 0; xo < width; ++xo) {
    for (std::int64_t q = 0; q < outs; ++q) out[xo * outs + q] = bias[q];
  }
  for (std::int64_t ch = 0; ch < s.in; ++ch) {
    for (std::int64_t i = 0; i < s.k; ++i) {
      const std::int64_t yi = y + i - s.pad;
      if (yi < 0 || yi >= s.h) continue;
      const float* line = image + ch * s.sc + yi * s.sh;
      for (std::int64_t j = 0; j < s.k; ++j) {
        const float* tap = taps + ((ch * s.k + i) * s.k + j) * outs;
        const std::int64_t first = std::max<std::int64_t>(0, s.pad - j);
        const std::int64_t last = std::min<std::int64_t>(width, s.w + s.pad - j);
        for (std::int64_t xo = first; xo < last; ++xo) {
          const float v = line[(xo + j - s.pad) * s.sw];
          float* o = out + xo * outs;
          for (std::int64_t q = 0; q < outs; ++q) o[q] += v * tap[q];
        }
      }
    }
  }
}

/// Eight floats, one AVX2 register (half an AVX-512 one; two SSE ones in the plain build):
/// sums kept in variables of this type stay in registers, where arrays of floats went
/// through the stack on every addition.
typedef float Float8 __attribute__((vector_size(32)));

inline Float8 load8(const float* p) {
  Float8 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

inline void store8(float* p, Float8 v) { std::memcpy(p, &v, sizeof v); }

/// The same for 8*V output channels, known when compiling: a pixel's sums stay in registers
/// across its taps, and inside the row P pixels go together so that their sums do not wait
/// on each other.
template <int V, int P>
MLSWARM_CPU_CLONES void conv_row_of(const float* __restrict image, const float* __restrict taps,
                                    const float* __restrict bias, float* __restrict out, std::int64_t y,
                                    std::int64_t width, const ConvShape& s) {
  constexpr int kOuts = 8 * V;
  const std::int64_t rows_from = std::max<std::int64_t>(0, s.pad - y);
  const std::int64_t rows_to = std::min<std::int64_t>(s.k, s.h + s.pad - y);
  Float8 b[V];
  for (int v = 0; v < V; ++v) b[v] = load8(bias + 8 * v);
  const auto pixel = [&](std::int64_t xo) {  // any pixel, edges included
    const std::int64_t cols_from = std::max<std::int64_t>(0, s.pad - xo);
    const std::int64_t cols_to = std::min<std::int64_t>(s.k, s.w + s.pad - xo);
    Float8 sum[V];
    for (int v = 0; v < V; ++v) sum[v] = b[v];
    for (std::int64_t ch = 0; ch < s.in; ++ch) {
      for (std::int64_t i = rows_from; i < rows_to; ++i) {
        const float* line = image + ch * s.sc + (y + i - s.pad) * s.sh;
        for (std::int64_t j = cols_from; j < cols_to; ++j) {
          const float value = line[(xo + j - s.pad) * s.sw];
          const float* tap = taps + ((ch * s.k + i) * s.k + j) * kOuts;
          for (int v = 0; v < V; ++v) sum[v] += value * load8(tap + 8 * v);
        }
      }
    }
    for (int v = 0; v < V; ++v) store8(out + xo * kOuts + 8 * v, sum[v]);
  };
  std::int64_t xo = 0;
  for (; xo < s.pad && xo < width; ++xo) pixel(xo);
  const std::int64_t inner_to = std::min<std::int64_t>(width, s.w + s.pad - s.k + 1);  // all columns inside
  for (; xo + P <= inner_to; xo += P) {
    Float8 sum[P][V];
    for (int p = 0; p < P; ++p) {
      for (int v = 0; v < V; ++v) sum[p][v] = b[v];
    }
    for (std::int64_t ch = 0; ch < s.in; ++ch) {
      for (std::int64_t i = rows_from; i < rows_to; ++i) {
        const float* line = image + ch * s.sc + (y + i - s.pad) * s.sh + (xo - s.pad) * s.sw;
        for (std::int64_t j = 0; j < s.k; ++j) {
          const float* tap = taps + ((ch * s.k + i) * s.k + j) * kOuts;
          for (int v = 0; v < V; ++v) {
            const Float8 t = load8(tap + 8 * v);
            for (int p = 0; p < P; ++p) sum[p][v] += line[(j + p) * s.sw] * t;
          }
        }
      }
    }
    for (int p = 0; p < P; ++p) {
      for (int v = 0; v < V; ++v) store8(out + (xo + p) * kOuts + 8 * v, sum[p][v]);
    }
  }
  for (; xo < width; ++xo) pixel(xo);
}

using ConvRow = void (*)(const float*, const float*, const float*, float*, std::int64_t, std::int64_t,
                         const ConvShape&);

ConvRow conv_row_for(std::int64_t outs) {
  switch (outs) {
    case 8:
      return conv_row_of<1, 4>;
    case 16:
      return conv_row_of<2, 4>;
    case 32:
      return conv_row_of<4, 2>;
    case 64:
      return conv_row_of<8, 1>;
    default:
      return conv_row;
  }
}

/// out[r][o] = bias[o] + W[o] . x[r] for R rows of x at a time: R sums of eight lanes each in
/// registers, every eight weights loaded once for all of them (the weight matrix, 1.6 MB for
/// the convnet, is read from memory once per block of rows: that read is what this costs);
/// the lanes are added in a fixed order at the end.
template <int R>
MLSWARM_CPU_CLONES void linear_rows_of(const float* __restrict x, const float* __restrict weight,
                                       const float* __restrict bias, float* __restrict out, std::int64_t in,
                                       std::int64_t outs, std::int64_t o_from, std::int64_t o_to) {
  const std::int64_t whole = in / 8 * 8;
  for (std::int64_t o = o_from; o < o_to; ++o) {
    const float* w = weight + o * in;
    Float8 lanes[R] = {};
    for (std::int64_t k = 0; k < whole; k += 8) {
      const Float8 u = load8(w + k);
      for (int r = 0; r < R; ++r) lanes[r] += u * load8(x + r * in + k);
    }
    for (int r = 0; r < R; ++r) {
      float sum = 0.0F;
      for (int l = 0; l < 8; ++l) sum += lanes[r][l];
      for (std::int64_t k = whole; k < in; ++k) sum += w[k] * x[r * in + k];
      out[r * outs + o] = sum + bias[o];
    }
  }
}

/// Rows of work per task for at::parallel_for: tasks of at least ~32k values.
std::int64_t grain_for(std::int64_t values_per_row) {
  return std::max<std::int64_t>(1, 32768 / std::max<std::int64_t>(1, values_per_row));
}

}  // namespace

bool is_nhwc_float(const torch::Tensor& x) {
  return x.defined() && x.device().is_cpu() && x.scalar_type() == torch::kFloat && x.dim() == 4 &&
         x.is_contiguous(torch::MemoryFormat::ChannelsLast);
}

torch::Tensor max_pool_2x2(const torch::Tensor& x, bool relu) {
  TORCH_CHECK(is_nhwc_float(x), "max_pool_2x2 takes a float CPU tensor, channels-last, of 4 dimensions");
  const std::int64_t n = x.size(0);
  const std::int64_t c = x.size(1);
  const std::int64_t h = x.size(2);
  const std::int64_t w = x.size(3);
  const std::int64_t ho = h / 2;
  const std::int64_t wo = w / 2;
  TORCH_CHECK(ho > 0 && wo > 0, "max_pool_2x2: an input of ", h, "x", w, " is smaller than the 2x2 window");
  torch::Tensor out = torch::empty({n, c, ho, wo}, x.options().memory_format(torch::MemoryFormat::ChannelsLast));
  if (out.numel() == 0) return out;  // an empty batch
  const float* in = x.data_ptr<float>();
  float* dst = out.data_ptr<float>();
  at::parallel_for(0, n * ho, grain_for(wo * c), [&](std::int64_t begin, std::int64_t end) {
    for (std::int64_t row = begin; row < end; ++row) {
      const std::int64_t image = row / ho;
      const std::int64_t y = row % ho;
      const float* top = in + ((image * h + 2 * y) * w) * c;
      pool_row(top, top + w * c, dst + row * wo * c, wo, c, relu);
    }
  });
  return out;
}

torch::Tensor small_input_conv(const torch::Tensor& x, const torch::Tensor& taps, const torch::Tensor& bias,
                               std::int64_t k, std::int64_t pad) {
  TORCH_CHECK(x.defined() && x.device().is_cpu() && x.scalar_type() == torch::kFloat && x.dim() == 4,
              "small_input_conv takes a float CPU tensor of 4 dimensions");
  const std::int64_t n = x.size(0);
  const std::int64_t in = x.size(1);
  const std::int64_t h = x.size(2);
  const std::int64_t w = x.size(3);
  const std::int64_t outs = taps.size(1);
  TORCH_CHECK(taps.is_contiguous() && taps.scalar_type() == torch::kFloat && taps.size(0) == in * k * k,
              "small_input_conv: taps must be [in*k*k][out] floats, contiguous");
  TORCH_CHECK(bias.is_contiguous() && bias.scalar_type() == torch::kFloat && bias.numel() == outs,
              "small_input_conv: one bias per output channel");
  const std::int64_t ho = h + 2 * pad - k + 1;
  const std::int64_t wo = w + 2 * pad - k + 1;
  TORCH_CHECK(ho > 0 && wo > 0, "small_input_conv: the input is smaller than the kernel");
  torch::Tensor out = torch::empty({n, outs, ho, wo}, x.options().memory_format(torch::MemoryFormat::ChannelsLast));
  const float* src = x.data_ptr<float>();
  const float* tap = taps.data_ptr<float>();
  const float* b = bias.data_ptr<float>();
  float* dst = out.data_ptr<float>();
  const ConvShape shape{in, k, pad, h, w, outs, x.stride(1), x.stride(2), x.stride(3)};
  const std::int64_t sn = x.stride(0);
  const ConvRow row_of = conv_row_for(outs);
  at::parallel_for(0, n * ho, grain_for(wo * outs), [&](std::int64_t begin, std::int64_t end) {
    for (std::int64_t row = begin; row < end; ++row) {
      row_of(src + (row / ho) * sn, tap, b, dst + row * wo * outs, row % ho, wo, shape);
    }
  });
  return out;
}

torch::Tensor linear(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias) {
  TORCH_CHECK(
      x.defined() && x.device().is_cpu() && x.scalar_type() == torch::kFloat && x.dim() == 2 && x.is_contiguous(),
      "serving::linear takes a contiguous float CPU matrix");
  TORCH_CHECK(weight.is_contiguous() && weight.scalar_type() == torch::kFloat && weight.dim() == 2 &&
                  weight.size(1) == x.size(1),
              "serving::linear: the weight must be [out][in] floats, contiguous, in = the rows' length");
  TORCH_CHECK(bias.is_contiguous() && bias.scalar_type() == torch::kFloat && bias.numel() == weight.size(0),
              "serving::linear: one bias per output");
  const std::int64_t n = x.size(0);
  const std::int64_t in = x.size(1);
  const std::int64_t outs = weight.size(0);
  torch::Tensor out = torch::empty({n, outs}, x.options());
  const float* src = x.data_ptr<float>();
  const float* w = weight.data_ptr<float>();
  const float* b = bias.data_ptr<float>();
  float* dst = out.data_ptr<float>();
  // Tasks split the outputs; rows go in blocks of 8, the rest in one more block.
  at::parallel_for(0, outs, std::max<std::int64_t>(1, 65536 / std::max<std::int64_t>(1, in)),
                   [&](std::int64_t from, std::int64_t to) {
                     std::int64_t r = 0;
                     for (; r + 8 <= n; r += 8)
                       linear_rows_of<8>(src + r * in, w, b, dst + r * outs, in, outs, from, to);
                     const float* rest = src + r * in;
                     float* rest_out = dst + r * outs;
                     switch (n - r) {  // the last rows in one read of W too
                       case 7:
                         linear_rows_of<7>(rest, w, b, rest_out, in, outs, from, to);
                         break;
                       case 6:
                         linear_rows_of<6>(rest, w, b, rest_out, in, outs, from, to);
                         break;
                       case 5:
                         linear_rows_of<5>(rest, w, b, rest_out, in, outs, from, to);
                         break;
                       case 4:
                         linear_rows_of<4>(rest, w, b, rest_out, in, outs, from, to);
                         break;
                       case 3:
                         linear_rows_of<3>(rest, w, b, rest_out, in, outs, from, to);
                         break;
                       case 2:
                         linear_rows_of<2>(rest, w, b, rest_out, in, outs, from, to);
                         break;
                       case 1:
                         linear_rows_of<1>(rest, w, b, rest_out, in, outs, from, to);
                         break;
                       default:
                         break;
                     }
                   });
  return out;
}

}  // namespace mlswarm::serving
