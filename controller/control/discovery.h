#pragma once

#include <chrono>
#include <string>
#include <vector>

#include "planner.h"
#include "subnet.h"
#include "mlswarm/ports.h"

namespace mlswarm {

struct ScanOptions {
  int port = kDefaultTrainPort;
  std::chrono::milliseconds connect_timeout{300};
  std::chrono::milliseconds read_timeout{500};   ///< after the connect, for the whole reply
  int max_in_flight = 256;                       ///< probes open at once
  std::chrono::milliseconds pass_timeout{5000};  ///< a whole pass ends by then, whatever the peers do
  /// The cluster key: with one, every probe carries a fresh challenge and a host is trusted
  /// only when it answers with the proof (see mlswarm/signing.h).
  std::string cluster_key;
};

/// One pass of discovery: every host of the subnet is probed concurrently (Boost.Asio, one
/// thread) with `GET /type`; a host is a trainer when it answers 200 with
/// `{"type":"train"}`, and a trusted one when it also proves the cluster key (or there is
/// none). A reply is read as untrusted input: at most 8 KiB, counted as it arrives, within one
/// deadline for the probe (connect and read timeouts together) and one for the pass. Never
/// connects outside the subnet. Not thread-safe: one pass at a time per object.
class SubnetScanner {
 public:
  SubnetScanner(Subnet subnet, ScanOptions options);

  /// Every trainer that answered, by address ("ip:port").
  std::vector<DiscoveredTrainer> scan_once() const;

  /// Probes these "ip" hosts, same rules; with `inside_subnet_only`, addresses outside the
  /// subnet are skipped (DNS answers are trusted as they are: the name is the operator's).
  std::vector<DiscoveredTrainer> probe(const std::vector<std::string>& hosts, bool inside_subnet_only = true) const;

  const Subnet& subnet() const { return subnet_; }

 private:
  Subnet subnet_;
  ScanOptions options_;
};

/// The IPv4 addresses a name resolves to (Swarm's `tasks.<service>` has one per task),
/// sorted; empty when it does not resolve.
std::vector<std::string> resolve_ipv4(const std::string& name);

/// Whether a reply to a discovery probe says "trainer" ({"type":"train"}) and, when
/// `expected_proof` is not empty, carries it. Reads the body as untrusted input; never throws.
struct ProbeVerdict {
  bool trainer = false;
  bool trusted = false;
};
ProbeVerdict judge_probe_reply(int status, const std::string& body, const std::string& expected_proof);

}  // namespace mlswarm
