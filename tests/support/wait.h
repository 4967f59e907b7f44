#pragma once

#include <chrono>
#include <thread>

namespace mlswarm::testing {

/// Polls `condition` every few milliseconds until it holds or `timeout` passes.
/// Returns whether it held. This is a deadline, not a sleep: it returns as soon as it can.
template <typename F>
bool eventually(F condition, std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (condition()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return condition();
}

}  // namespace mlswarm::testing
