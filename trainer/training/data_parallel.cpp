#include "data_parallel.h"

#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <fmt/format.h>
#include <zlib.h>

#include "mlswarm/error.h"

namespace mlswarm {
namespace {

constexpr std::int64_t kBucketBytes = 25 << 20;

using Clock = std::chrono::steady_clock;

}  // namespace

struct DataParallel::Impl {
  /// Parameters whose gradients live in one flat tensor that is allreduced as a whole.
  struct Bucket {
    std::vector<torch::Tensor> params;
    torch::Tensor flat;
    std::vector<const void*> views;  ///< where each parameter's gradient must point
  };

  Placement placement;
  std::chrono::milliseconds timeout;
  c10::intrusive_ptr<c10d::ProcessGroupGloo> group;
  std::vector<Bucket> buckets;
  std::size_t bound_extras = 0;  ///< slots after the last bucket's gradients
  double allreduce_seconds = 0;
  std::uint64_t allreduces = 0;

  /// Runs a collective and waits for it; what goes wrong is a lost peer.
  template <typename Start>
  void collective(const char* what, Start&& start) {
    try {
      auto work = start();
      work->wait(timeout);
    } catch (const c10::Error& e) {
      throw lost(what, e.what_without_backtrace());
    } catch (const std::exception& e) {
      throw lost(what, e.what());
    }
  }

  /// Makes every parameter's gradient a view into its bucket (the last one with `extras` slots).
  void bind_buckets(torch::nn::Module& model, std::size_t extras);
  bool buckets_bound(std::size_t extras) const;

  Error lost(const char* what, std::string_view why) const {
    why = why.substr(0, why.find('\n'));
    return Error(ErrorCode::kLostPeer,
                 fmt::format("rank {} of {}: {} failed: {}", placement.rank, placement.world_size, what, why));
  }
};

DataParallel::DataParallel(const Placement& placement, const std::string& job_id, int attempt,
                           std::chrono::milliseconds timeout)
    : impl_(std::make_unique<Impl>()) {
  impl_->placement = placement;
  impl_->timeout = timeout;
  try {
    c10d::TCPStoreOptions options;
    options.port = static_cast<std::uint16_t>(placement.port);
    options.isServer = placement.rank == 0;
    // The rendezvous waits on the prefixed keys of this attempt, not on a count of whoever
    // connects: a rank of another attempt cannot stand in for one of this one.
    options.waitWorkers = false;
    options.timeout = timeout;
    auto tcp = c10::make_intrusive<c10d::TCPStore>(placement.hosts.at(0), options);
    auto store = c10::make_intrusive<c10d::PrefixStore>(fmt::format("mlswarm/{}/{}/", job_id, attempt), tcp);
    auto gloo = c10d::ProcessGroupGloo::Options::create(timeout);
    gloo->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname(placement.hosts.at(placement.rank)));
    gloo->threads = 1;  // one collective at a time; a second thread only competes for the cores
    impl_->group = c10::make_intrusive<c10d::ProcessGroupGloo>(store, placement.rank, placement.world_size, gloo);
  } catch (const std::exception& e) {
    std::string_view why = e.what();
    throw Error(ErrorCode::kLostPeer, fmt::format("rank {} of {} could not join at {}:{} within {} ms: {}",
                                                  placement.rank, placement.world_size, placement.hosts.at(0),
                                                  placement.port, timeout.count(), why.substr(0, why.find('\n'))));
  }
}

DataParallel::~DataParallel() = default;

int DataParallel::rank() const { return impl_->placement.rank; }
int DataParallel::world_size() const { return impl_->placement.world_size; }
double DataParallel::allreduce_seconds() const { return impl_->allreduce_seconds; }
std::uint64_t DataParallel::allreduces() const { return impl_->allreduces; }

void DataParallel::broadcast_bytes(std::string& bytes) {
  std::vector<at::Tensor> size{torch::tensor({static_cast<std::int64_t>(bytes.size())}, torch::kInt64)};
  impl_->collective("broadcast", [&] { return impl_->group->broadcast(size); });
  const std::int64_t n = size[0].item<std::int64_t>();
  std::vector<at::Tensor> data{torch::empty({n}, torch::kUInt8)};
  if (rank() == 0) std::memcpy(data[0].data_ptr(), bytes.data(), bytes.size());
  impl_->collective("broadcast", [&] { return impl_->group->broadcast(data); });
  bytes.assign(static_cast<const char*>(data[0].data_ptr()), static_cast<std::size_t>(n));
}

void DataParallel::broadcast_buffers(torch::nn::Module& model) {
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> buffers;
  for (auto& b : model.buffers()) {
    if (b.numel() > 0 && b.is_floating_point()) buffers.push_back(b);
  }
  if (buffers.empty()) return;
  std::vector<torch::Tensor> flat_parts;
  for (auto& b : buffers) flat_parts.push_back(b.reshape({-1}));
  std::vector<at::Tensor> flat{torch::cat(flat_parts)};
  impl_->collective("broadcast", [&] { return impl_->group->broadcast(flat); });
  std::int64_t offset = 0;
  for (auto& b : buffers) {
    b.copy_(flat[0].slice(0, offset, offset + b.numel()).view_as(b));
    offset += b.numel();
  }
}

std::vector<double> DataParallel::allreduce_values(const std::vector<double>& values) {
  std::vector<at::Tensor> flat{torch::tensor(values, torch::kFloat64)};
  impl_->collective("allreduce", [&] { return impl_->group->allreduce(flat); });
  std::vector<double> out(values.size());
  for (std::size_t i = 0; i < values.size(); ++i) out[i] = flat[0][static_cast<std::int64_t>(i)].item<double>();
  return out;
}

void DataParallel::Impl::bind_buckets(torch::nn::Module& model, std::size_t extras) {
  auto parameters = model.parameters();
  std::reverse(parameters.begin(), parameters.end());  // the last layers' gradients are ready first
  buckets.clear();
  buckets.emplace_back();
  std::int64_t bytes = 0;
  for (auto& p : parameters) {
    const std::int64_t size = p.numel() * p.element_size();
    if (bytes > 0 && bytes + size > kBucketBytes) {
      buckets.emplace_back();
      bytes = 0;
    }
    buckets.back().params.push_back(p);
    bytes += size;
  }
  for (std::size_t b = 0; b < buckets.size(); ++b) {
    Bucket& bucket = buckets[b];
    std::int64_t numel = 0;
    for (auto& p : bucket.params) numel += p.numel();
    const bool last = b + 1 == buckets.size();
    bucket.flat =
        torch::zeros({numel + (last ? static_cast<std::int64_t>(extras) : 0)}, bucket.params.front().options());
    std::int64_t offset = 0;
    for (auto& p : bucket.params) {
      // The gradient becomes a view into the bucket: backward accumulates straight into it
      // and the allreduce needs no copy in or out.
      auto view = bucket.flat.slice(0, offset, offset + p.numel()).view_as(p);
      if (p.grad().defined()) view.copy_(p.grad());
      p.mutable_grad() = view;
      bucket.views.push_back(view.data_ptr());
      offset += p.numel();
    }
  }
  bound_extras = extras;
}

bool DataParallel::Impl::buckets_bound(std::size_t extras) const {
  if (buckets.empty() || bound_extras != extras) return false;
  for (const auto& bucket : buckets) {
    for (std::size_t i = 0; i < bucket.params.size(); ++i) {
      const auto& grad = bucket.params[i].grad();
      if (!grad.defined() || grad.data_ptr() != bucket.views[i]) return false;
    }
  }
  return true;
}

void DataParallel::zero_gradients(torch::nn::Module& model) {
  torch::NoGradGuard no_grad;
  for (auto& p : model.parameters()) {
    if (p.grad().defined()) p.mutable_grad().zero_();
  }
}

std::vector<double> DataParallel::allreduce_gradients(torch::nn::Module& model, const std::vector<double>& extras) {
  const auto started = Clock::now();
  torch::NoGradGuard no_grad;
  if (!impl_->buckets_bound(extras.size())) impl_->bind_buckets(model, extras.size());
  std::vector<double> summed(extras.size());
  for (std::size_t b = 0; b < impl_->buckets.size(); ++b) {
    torch::Tensor& flat = impl_->buckets[b].flat;
    const bool last = b + 1 == impl_->buckets.size();
    const std::int64_t tail = flat.numel() - static_cast<std::int64_t>(extras.size());
    if (last) {
      for (std::size_t i = 0; i < extras.size(); ++i) flat[tail + static_cast<std::int64_t>(i)] = extras[i];
    }
    std::vector<at::Tensor> tensors{flat};
    impl_->collective("allreduce", [&] { return impl_->group->allreduce(tensors); });
    if (last) {
      for (std::size_t i = 0; i < extras.size(); ++i)
        summed[i] = flat[tail + static_cast<std::int64_t>(i)].item<double>();
    }
  }
  impl_->allreduce_seconds += std::chrono::duration<double>(Clock::now() - started).count();
  ++impl_->allreduces;
  return summed;
}

std::uint32_t parameter_checksum(torch::nn::Module& model) {
  uLong crc = crc32(0L, Z_NULL, 0);
  for (const auto& p : model.parameters()) {
    const torch::Tensor cpu = p.detach().to(torch::kCPU).contiguous();
    crc = crc32(crc, static_cast<const Bytef*>(cpu.data_ptr()), static_cast<uInt>(cpu.numel() * cpu.element_size()));
  }
  return static_cast<std::uint32_t>(crc);
}

}  // namespace mlswarm
