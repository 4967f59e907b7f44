#pragma once

#include <chrono>
#include <string>
#include <vector>

#include "subnet.h"

namespace mlswarm {

struct ScanOptions {
  int port = 48516;
  std::chrono::milliseconds connect_timeout{300};
  std::chrono::milliseconds read_timeout{500};
  int max_in_flight = 256;  ///< probes open at once
};

/// One pass of discovery: every host of the subnet is probed concurrently (Boost.Asio, one
/// thread) with `GET /type`; a host is a trainer when it answers 200 with
/// `{"type":"train"}`. Never connects outside the subnet. Not thread-safe: one pass at a time
/// per object.
class SubnetScanner {
 public:
  SubnetScanner(Subnet subnet, ScanOptions options);

  /// Returns the "ip:port" of every trainer that answered, sorted.
  std::vector<std::string> scan_once() const;

  /// Probes these "ip" hosts, same rules; with `inside_subnet_only`, addresses outside the
  /// subnet are skipped (DNS answers are trusted as they are: the name is the operator's).
  std::vector<std::string> probe(const std::vector<std::string>& hosts, bool inside_subnet_only = true) const;

  const Subnet& subnet() const { return subnet_; }

 private:
  Subnet subnet_;
  ScanOptions options_;
};

/// The IPv4 addresses a name resolves to (Swarm's `tasks.<service>` has one per task),
/// sorted; empty when it does not resolve.
std::vector<std::string> resolve_ipv4(const std::string& name);

}  // namespace mlswarm
