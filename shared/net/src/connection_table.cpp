#include "connection_table.h"

#include <algorithm>

namespace mlswarm {

ConnectionTable::ConnectionTable(std::size_t max_total, std::size_t max_per_address)
    : max_total_(std::max<std::size_t>(1, max_total)),
      max_per_address_(std::max<std::size_t>(1, std::min(max_per_address, max_total))) {}

void ConnectionTable::unlink_waiting(Entry& entry) {
  if (!entry.waiting) return;
  waiting_.erase(entry.in_all);
  addresses_[entry.address].waiting.erase(entry.in_address);
  entry.waiting = false;
}

void ConnectionTable::remove(std::uint64_t id) {
  auto it = entries_.find(id);
  if (it == entries_.end()) return;
  unlink_waiting(it->second);
  auto address = addresses_.find(it->second.address);
  if (address != addresses_.end() && --address->second.count == 0) addresses_.erase(address);
  entries_.erase(it);
}

ConnectionTable::Admission ConnectionTable::open(std::uint64_t id, const std::string& address) {
  std::lock_guard lock(mutex_);
  Admission admission;
  const auto own = addresses_.find(address);
  const bool address_full = own != addresses_.end() && own->second.count >= max_per_address_;
  if (address_full) {
    if (own->second.waiting.empty()) return admission;
    admission.evict = own->second.waiting.front();
  } else if (entries_.size() >= max_total_) {
    if (waiting_.empty()) return admission;
    admission.evict = waiting_.front();
  }
  if (admission.evict) remove(*admission.evict);
  Entry& entry = entries_[id];
  entry.address = address;
  Address& own_address = addresses_[address];
  ++own_address.count;
  entry.waiting = true;  // for its first head
  entry.in_all = waiting_.insert(waiting_.end(), id);
  entry.in_address = own_address.waiting.insert(own_address.waiting.end(), id);
  admission.accepted = true;
  return admission;
}

void ConnectionTable::set_waiting(std::uint64_t id, bool waiting) {
  std::lock_guard lock(mutex_);
  auto it = entries_.find(id);
  if (it == entries_.end() || it->second.waiting == waiting) return;
  Entry& entry = it->second;
  if (!waiting) {
    unlink_waiting(entry);
    return;
  }
  entry.waiting = true;
  entry.in_all = waiting_.insert(waiting_.end(), id);
  auto& list = addresses_[entry.address].waiting;
  entry.in_address = list.insert(list.end(), id);
}

void ConnectionTable::close(std::uint64_t id) {
  std::lock_guard lock(mutex_);
  remove(id);
}

std::size_t ConnectionTable::size() const {
  std::lock_guard lock(mutex_);
  return entries_.size();
}

std::size_t ConnectionTable::count(const std::string& address) const {
  std::lock_guard lock(mutex_);
  auto it = addresses_.find(address);
  return it == addresses_.end() ? 0 : it->second.count;
}

}  // namespace mlswarm
