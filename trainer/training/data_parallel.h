#pragma once

// The collectives of a data-parallel job. Includes LibTorch: only for the trainer's LibTorch
// translation units.

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "mlswarm/job.h"

namespace mlswarm {

/// One rank's membership in the group of one attempt of a data-parallel job: c10d's Gloo
/// process group over a TCPStore that rank 0 serves at hosts[0]:port, every key prefixed with
/// the job and the attempt, so that a rank of another attempt never joins. Each rank binds
/// Gloo to its own host (the address the controller reached it at). Gradient averaging is
/// ours (the C++ frontend has no DistributedDataParallel): after backward(), the gradients
/// are summed over the ranks in flattened buckets (about 25 MB each, in reverse registration
/// order, as PyTorch's reducer does), then every rank takes the same optimiser step.
/// Every call is a collective: all ranks make the same calls in the same order. A collective
/// that does not complete within the timeout (a rank died) throws Error(kLostPeer).
/// Not thread-safe: one job thread uses it.
class DataParallel {
 public:
  /// Joins the group; blocks until every rank has, or throws Error(kLostPeer) at `timeout`.
  DataParallel(const Placement& placement, const std::string& job_id, int attempt, std::chrono::milliseconds timeout);
  ~DataParallel();
  DataParallel(const DataParallel&) = delete;
  DataParallel& operator=(const DataParallel&) = delete;

  int rank() const;
  int world_size() const;

  /// Rank 0's bytes on every rank (the others' `bytes` are replaced).
  void broadcast_bytes(std::string& bytes);
  /// Rank 0's buffers (batch-norm running statistics) on every rank.
  void broadcast_buffers(torch::nn::Module& model);
  /// Zeroes every gradient in place. The optimiser's zero_grad() would detach them, which
  /// gradients that are views into the buckets cannot be.
  static void zero_gradients(torch::nn::Module& model);
  /// Sums every parameter's gradient over the ranks (a missing gradient counts as zeros),
  /// and `extras` with them; returns the summed extras.
  std::vector<double> allreduce_gradients(torch::nn::Module& model, const std::vector<double>& extras);

  /// The sums of `values` over the ranks (in double precision).
  std::vector<double> allreduce_values(const std::vector<double>& values);

  /// Seconds spent in gradient allreduces so far, and how many there were.
  double allreduce_seconds() const;
  std::uint64_t allreduces() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

/// A checksum of a model's parameters (their bytes on the CPU), to compare ranks.
std::uint32_t parameter_checksum(torch::nn::Module& model);

}  // namespace mlswarm
