#pragma once

// Internal to the shared library: which connections HttpServer keeps open, as a pure table
// (no sockets), so that the choice of which one to close is unit-tested.

#include <cstddef>
#include <cstdint>
#include <list>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>

namespace mlswarm {

/// The open connections of a server, by id and client address, bounded in all and per address.
///
/// A connection is "waiting" while it waits for a request head (new, or kept alive between
/// requests): it holds no work and is the one to close when room is needed, the oldest waiting
/// first. Any other state (a body being read, a request at a worker, a reply being written) is
/// "busy" and never chosen. So a flood of idle or trickling connections from one address can
/// never hold more than its share, and a flood from many can never keep a new client (a health
/// probe) out: it displaces the oldest waiting connection.
///
/// Thread-safe (one mutex guards everything).
class ConnectionTable {
 public:
  ConnectionTable(std::size_t max_total, std::size_t max_per_address);

  struct Admission {
    bool accepted = false;
    /// A connection to close to make room (already removed from the table), if any.
    std::optional<std::uint64_t> evict;
  };
  /// A new connection from `address`, waiting. Accepted when there is room, or when room can
  /// be made by closing a waiting connection: of the same address when the address is at its
  /// share, else the oldest of all; refused when every connection in the way is busy.
  Admission open(std::uint64_t id, const std::string& address);
  /// Marks a connection waiting (true) or busy (false). Unknown ids are ignored.
  void set_waiting(std::uint64_t id, bool waiting);
  /// Forgets a connection (closed). Unknown ids are ignored.
  void close(std::uint64_t id);

  std::size_t size() const;
  std::size_t count(const std::string& address) const;

 private:
  struct Entry {
    std::string address;
    bool waiting = false;
    std::list<std::uint64_t>::iterator in_all;      ///< valid while waiting
    std::list<std::uint64_t>::iterator in_address;  ///< valid while waiting
  };
  struct Address {
    std::size_t count = 0;
    std::list<std::uint64_t> waiting;  ///< oldest first
  };
  void unlink_waiting(Entry& entry);
  void remove(std::uint64_t id);

  const std::size_t max_total_;
  const std::size_t max_per_address_;
  mutable std::mutex mutex_;
  std::unordered_map<std::uint64_t, Entry> entries_;
  std::map<std::string, Address> addresses_;
  std::list<std::uint64_t> waiting_;  ///< every waiting connection, oldest first
};

}  // namespace mlswarm
