#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <mutex>
#include <string>

namespace mlswarm {

/// Which controller replica leads, as the lease file says.
struct LeaderView {
  std::uint64_t term = 0;  ///< rises by one with each new leader
  std::string leader;      ///< the leader's advertised address ("ip:port"), empty when none
  bool mine = false;       ///< this process is that leader and its lease is fresh
};

/// The election among controller replicas that share HOME_DIR: a lease in
/// `HOME_DIR/controller/leader.lease` holding the term, the leader's address and a heartbeat.
///
/// Every read-modify-write of the lease happens under an exclusive flock of
/// `HOME_DIR/controller/leader.lock` (a kernel lock: released when a process dies, carried
/// between nodes by NFS), held for a few microseconds. The lease is never written in place: a
/// new file is renamed over it, so a write that fails (a full disk) leaves the old lease whole.
/// A new term is greater than every term seen in the lease, by this process, or in the job
/// journal (set_term_floor), so terms never go back. A leader whose renewal fails steps down at
/// once.
/// The leader renews the heartbeat every `retry`; a follower that sees the heartbeat unchanged
/// for `lease` (measured on its own monotonic clock, so clock skew between nodes does not
/// matter), or the lease released, takes over with the next term. A leader that has not
/// renewed within `lease - retry` (it was paused, or its disk stalled) may not act: can_lead()
/// is false, and fenced() refuses, so a paused leader that wakes after a takeover writes
/// nothing. A process that finds the holder was a process of its own host that is gone takes
/// over at once (a restarted controller does not wait out its predecessor's lease).
/// Thread-safe: `mutex_` guards the fields after it.
class Leadership {
 public:
  struct Options {
    std::filesystem::path dir;  ///< HOME_DIR/controller
    std::string address;        ///< what followers forward to: this replica's "ip:port"
    std::chrono::milliseconds lease{2000};
    std::chrono::milliseconds retry{250};
  };

  explicit Leadership(Options options);

  /// One round of the election (call it every `retry`): a leader renews its lease or finds it
  /// lost; a follower takes over an expired or released lease. Returns the view after it.
  LeaderView tick();

  /// The view as of the last tick.
  LeaderView view() const;

  /// Whether this process leads `term` and its lease is fresh enough to act on.
  bool can_lead(std::uint64_t term) const;

  /// Runs `write` under the lease file's lock when this process still leads the term on file
  /// with a fresh lease; returns false, running nothing, otherwise. The journal's appends go
  /// through here: a stale leader's write can never land after a takeover.
  bool fenced(const std::function<void()>& write);

  /// The highest term in the job journal (JobRegistry::max_term), asked before taking over.
  void set_term_floor(std::function<std::uint64_t()> floor);

  /// Gives the lease up (SIGTERM): a follower takes over at its next tick. Idempotent.
  void release();

  std::chrono::milliseconds retry() const { return options_.retry; }

 private:
  struct Lease {
    std::uint64_t term = 0;
    std::string leader;
    std::uint64_t beat = 0;
    bool released = false;
    std::string host;  ///< hostname of the leader's process
    long pid = 0;
  };
  class LockedFile;

  static Lease parse(const std::string& text);
  Lease read_lease(const LockedFile& lock) const;
  void write_lease(const Lease& lease) const;
  static std::string format(const Lease& lease);
  bool holder_is_gone(const Lease& lease) const;

  Options options_;
  std::string hostname_;
  mutable std::mutex mutex_;
  std::uint64_t my_term_ = 0;       ///< the term this process leads, 0 when it does not
  std::uint64_t highest_term_ = 0;  ///< the highest term seen on file, in the journal or taken
  std::function<std::uint64_t()> term_floor_;
  std::chrono::steady_clock::time_point renewed_{};
  std::uint64_t seen_term_ = 0;  ///< the lease as last read, and since when it has not changed
  std::uint64_t seen_beat_ = 0;
  std::chrono::steady_clock::time_point seen_since_{};
  LeaderView view_;
};

}  // namespace mlswarm
