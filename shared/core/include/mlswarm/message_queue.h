#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <optional>
#include <utility>

namespace mlswarm {

/// An unbounded multi-producer, multi-consumer FIFO with sequence numbers.
/// Thread-safe: one mutex guards the items, the counters and the closed flag.
/// After close(), push() drops items and pop() drains what is left, then returns nullopt.
template <typename T>
class MessageQueue {
 public:
  /// Enqueues `item`; returns its sequence number (1, 2, ...), or 0 when the queue is closed.
  std::uint64_t push(T item) {
    std::uint64_t seq = 0;
    {
      std::lock_guard lock(mutex_);
      if (closed_) return 0;
      seq = ++pushed_;
      items_.emplace_back(seq, std::move(item));
    }
    ready_.notify_one();
    return seq;
  }

  /// Blocks until an item is available or the queue is closed and empty.
  /// Returns the item with its sequence number.
  std::optional<std::pair<std::uint64_t, T>> pop() {
    std::unique_lock lock(mutex_);
    ready_.wait(lock, [&] { return !items_.empty() || closed_; });
    if (items_.empty()) return std::nullopt;
    auto front = std::move(items_.front());
    items_.pop_front();
    return front;
  }

  void close() {
    {
      std::lock_guard lock(mutex_);
      closed_ = true;
    }
    ready_.notify_all();
  }

  std::size_t size() const {
    std::lock_guard lock(mutex_);
    return items_.size();
  }

 private:
  mutable std::mutex mutex_;
  std::condition_variable ready_;
  std::deque<std::pair<std::uint64_t, T>> items_;
  std::uint64_t pushed_ = 0;
  bool closed_ = false;
};

}  // namespace mlswarm
