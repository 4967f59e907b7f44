#pragma once

#include <optional>
#include <string>
#include <vector>

namespace mlswarm {

/// What the scheduler knows of one trainer.
struct TrainerLoad {
  std::string address;
  int capacity = 0;  ///< worker threads
  int busy = 0;      ///< jobs running or queued there, including ones just dispatched
};

/// The trainer with the most free capacity (capacity - busy); ties go to the fewest busy
/// jobs, then to the lowest address, so the choice is deterministic. nullopt when no trainer
/// has a free worker: the job then waits as `queued`.
std::optional<std::string> choose_trainer(const std::vector<TrainerLoad>& trainers);

}  // namespace mlswarm
