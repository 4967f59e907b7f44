// A job's data: its training subset and test range, per-channel statistics, the resident normalised split, and
// augmentation.

#include "training_parts.h"

#include <algorithm>
#include <cmath>
#include <sstream>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "mlswarm/error.h"
#include "mlswarm/json_fields.h"
#include "mlswarm/torch/model_zoo.h"

namespace mlswarm {

using nlohmann::json;

/// The training subset [start, end) of the train split.
std::pair<std::int64_t, std::int64_t> subset_of(const JobSpec& spec, const Dataset& data) {
  std::int64_t start = 0;
  std::int64_t end = data.train.count;
  if (spec.example_idxs) {
    start = spec.example_idxs->first;
    end = std::min(spec.example_idxs->second, data.train.count);
  }
  if (end - start < 2) {
    throw Error(ErrorCode::kInvalidArgument,
                fmt::format("example_idxs selects {} examples; training needs at least 2",
                            std::max<std::int64_t>(0, end - start)),
                "example_idxs");
  }
  return {start, end};
}

/// The evaluation range [start, end) of the test split: test_idxs, or all of it.
std::pair<std::int64_t, std::int64_t> test_range_of(const JobSpec& spec, const Dataset& data) {
  if (!spec.test_idxs) return {0, data.test.count};
  const std::int64_t start = std::min(spec.test_idxs->first, data.test.count);
  const std::int64_t end = std::min(spec.test_idxs->second, data.test.count);
  if (end <= start) {
    throw Error(ErrorCode::kInvalidArgument,
                fmt::format("test_idxs selects no example of the {}-image test split", data.test.count), "test_idxs");
  }
  return {start, end};
}

/// Per-channel mean and standard deviation of pixels scaled to 0..1.
void channel_stats(const Dataset& data, std::int64_t start, std::int64_t end, std::vector<double>& mean,
                   std::vector<double>& stdev) {
  const int c = data.info.channels;
  const std::int64_t plane = std::int64_t{data.info.height} * data.info.width;
  std::vector<double> sum(c, 0.0), sq(c, 0.0);
  for (std::int64_t i = start; i < end; ++i) {
    const std::uint8_t* img = data.train.images.data() + i * c * plane;
    for (int ch = 0; ch < c; ++ch) {
      std::uint64_t s = 0, q = 0;
      for (std::int64_t p = 0; p < plane; ++p) {
        std::uint32_t v = img[ch * plane + p];
        s += v;
        q += v * v;
      }
      sum[ch] += static_cast<double>(s);
      sq[ch] += static_cast<double>(q);
    }
  }
  const double n = static_cast<double>((end - start) * plane);
  mean.assign(c, 0.0);
  stdev.assign(c, 1.0);
  for (int ch = 0; ch < c; ++ch) {
    double m = sum[ch] / n / 255.0;
    double var = sq[ch] / n / (255.0 * 255.0) - m * m;
    mean[ch] = m;
    stdev[ch] = std::sqrt(std::max(var, 1e-6));
  }
}

/// Normalised images and labels of one split range, resident on `device`.
std::pair<torch::Tensor, torch::Tensor> resident_split(const DatasetSplit& split, const DatasetInfo& info,
                                                       std::int64_t start, std::int64_t end,
                                                       const std::vector<double>& mean,
                                                       const std::vector<double>& stdev, torch::Device device) {
  const std::int64_t chw = std::int64_t{info.channels} * info.height * info.width;
  auto bytes = torch::from_blob(const_cast<std::uint8_t*>(split.images.data()) + start * chw,
                                {end - start, info.channels, info.height, info.width}, torch::kUInt8);
  auto labels = torch::from_blob(const_cast<std::uint8_t*>(split.labels.data()) + start, {end - start}, torch::kUInt8);
  auto x = normalize_images(bytes.to(device), mean, stdev).contiguous();
  auto y = labels.to(device).to(torch::kInt64);
  return {x, y};
}

torch::Tensor augment_batch(const torch::Tensor& x, const TrainOpts& o, int epoch, int step, std::int64_t first,
                            std::int64_t count) {
  if (o.augment == Augment::kNone || count <= 0) return x;
  constexpr std::int64_t kPad = 4;
  // Drawn for the whole global batch from (seed, epoch, step), then this rank's rows taken:
  // the same images get the same crops and flips however many trainers share the batch.
  auto generator = at::make_generator<at::CPUGeneratorImpl>(
      o.seed * 7919ULL + static_cast<std::uint64_t>(epoch) * 1000003ULL + static_cast<std::uint64_t>(step));
  const std::int64_t global = first + count;
  // One draw per image (a row of three numbers in 0..17, uniform modulo 9 and modulo 2), so
  // image i's draw does not depend on how many images follow it.
  auto draws = torch::randint(0, 18, {global, 3}, generator, torch::kInt64).slice(0, first, global);
  const auto device = x.device();
  auto shifts = o.augment == Augment::kFlip
                    ? torch::full({count, 2}, kPad, torch::kInt64).to(device)  // the image itself
                    : draws.slice(1, 0, 2).remainder(2 * kPad + 1).to(device);
  auto flips = draws.select(1, 2).remainder(2).to(device).to(torch::kBool);
  const std::int64_t h = x.size(2), w = x.size(3);
  auto padded = torch::constant_pad_nd(x, {kPad, kPad, kPad, kPad}, 0.0);
  auto ints = torch::TensorOptions().dtype(torch::kInt64).device(device);
  auto rows = shifts.select(1, 0).unsqueeze(1) + torch::arange(h, ints).unsqueeze(0);  // [B][H]
  auto cols = shifts.select(1, 1).unsqueeze(1) + torch::arange(w, ints).unsqueeze(0);  // [B][W]
  cols = torch::where(flips.unsqueeze(1), cols.flip(1), cols);  // a mirrored crop reads its columns backwards
  auto batch = torch::arange(x.size(0), ints).view({-1, 1, 1});
  using torch::indexing::Slice;
  // Advanced indices around a slice put their dimensions first: [B][H][W][C] -> [B][C][H][W].
  auto out = padded.index({batch, Slice(), rows.unsqueeze(2), cols.unsqueeze(1)});
  return out.permute({0, 3, 1, 2}).contiguous();
}

}  // namespace mlswarm
