#pragma once

#include <optional>
#include <string>
#include <vector>

namespace mlswarm {

/// What placement knows of one trainer.
struct TrainerLoad {
  std::string address;
  int capacity = 0;  ///< worker threads
  int busy = 0;      ///< jobs running or queued there, including ones just dispatched
};

/// The trainer with the most free capacity (capacity - busy); ties go to the fewest busy
/// jobs, then to the lowest address, so the choice is deterministic. nullopt when no trainer
/// has a free worker: the job then waits as `queued`.
std::optional<std::string> choose_trainer(const std::vector<TrainerLoad>& trainers);

/// `count` distinct trainers for one job (its ranks, in order), each picked as
/// choose_trainer picks among those not picked yet; each picked one's `busy` goes up by one.
/// Empty, with `loads` unchanged, when fewer than `count` trainers have a free worker.
std::vector<std::string> place(std::vector<TrainerLoad>& loads, int count);

}  // namespace mlswarm
