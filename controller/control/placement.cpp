#include "placement.h"

#include <algorithm>
#include <tuple>

namespace mlswarm {

std::optional<std::string> choose_trainer(const std::vector<TrainerLoad>& trainers) {
  const TrainerLoad* best = nullptr;
  for (const auto& t : trainers) {
    if (t.capacity - t.busy <= 0) continue;
    if (best == nullptr || std::make_tuple(-(t.capacity - t.busy), t.busy, t.address) <
                               std::make_tuple(-(best->capacity - best->busy), best->busy, best->address)) {
      best = &t;
    }
  }
  if (best == nullptr) return std::nullopt;
  return best->address;
}

std::vector<std::string> place(std::vector<TrainerLoad>& loads, int count) {
  std::vector<TrainerLoad> candidates = loads;
  std::vector<std::string> chosen;
  while (static_cast<int>(chosen.size()) < count) {
    auto pick = choose_trainer(candidates);
    if (!pick) return {};
    chosen.push_back(*pick);
    std::erase_if(candidates, [&](const TrainerLoad& t) { return t.address == *pick; });
  }
  for (auto& l : loads) {
    if (std::find(chosen.begin(), chosen.end(), l.address) != chosen.end()) ++l.busy;
  }
  return chosen;
}

}  // namespace mlswarm
