#include "scheduler.h"

#include <tuple>

namespace mlswarm {

std::optional<std::string> choose_trainer(const std::vector<TrainerLoad>& trainers) {
  const TrainerLoad* best = nullptr;
  for (const auto& t : trainers) {
    if (t.capacity - t.busy <= 0) continue;
    if (best == nullptr ||
        std::make_tuple(-(t.capacity - t.busy), t.busy, t.address) <
            std::make_tuple(-(best->capacity - best->busy), best->busy, best->address)) {
      best = &t;
    }
  }
  if (best == nullptr) return std::nullopt;
  return best->address;
}

}  // namespace mlswarm
