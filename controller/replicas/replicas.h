#pragma once

#include <atomic>
#include <chrono>
#include <optional>
#include <string>
#include <thread>

#include "cluster.h"
#include "controller_api.h"
#include "job_registry.h"
#include "leadership.h"
#include "subnet.h"

namespace mlswarm {

/// This controller among its replicas, all sharing HOME_DIR. One thread runs the election
/// (Leadership::tick every retry) and what follows from it: only the leader writes the
/// journal and runs the cluster loop (discovery, dispatch); a follower re-reads the journal to
/// serve the read routes, serves /predict and /classify from HOME_DIR like the leader, and
/// forwards POST /train and DELETE /jobs/{id} to the leader with the client's token and
/// request id. A lone controller simply leads.
/// Thread-safe; the leadership, registry and cluster are not owned and must outlive it.
class Replicas {
 public:
  struct Options {
    std::string address;  ///< this replica's advertised "ip:port"
    std::chrono::milliseconds forward_timeout{10000};
    bool tls = false;  ///< replicas speak HTTPS to each other (certificates are not verified)
  };

  Replicas(Leadership& leadership, JobRegistry& registry, Cluster& cluster, Options options);
  ~Replicas();
  Replicas(const Replicas&) = delete;
  Replicas& operator=(const Replicas&) = delete;

  /// Runs the first round of the election at once (a lone controller leads before it
  /// answers its first request), then the election thread.
  void start();
  /// SIGTERM: /readyz turns 503 and every reply asks the client to close its connection, so
  /// that load balancers and clients move to other replicas while this one still answers.
  void drain();
  bool draining() const { return draining_.load(); }
  /// Stops the election thread and the cluster loop and gives up the lease. Idempotent.
  void stop();

  /// What the API needs: forwarding, the /status block, readiness.
  ReplicaHooks hooks();

 private:
  void loop(std::stop_token stop);
  void follow_view(const LeaderView& view);
  std::optional<HttpReply> forward(const HttpRequest& request) const;

  Leadership& leadership_;
  JobRegistry& registry_;
  Cluster& cluster_;
  Options options_;
  std::atomic<bool> draining_{false};
  std::atomic<bool> leading_{false};
  std::jthread thread_;
};

/// The address other replicas reach this controller at: `advertise` when set; else the
/// listen host when it is a specific address; else this machine's IPv4 address inside
/// `subnet` (the overlay, on Swarm); else the one its hostname resolves to; with `port`.
std::string advertised_address(const std::string& advertise, const std::string& host, int port,
                               const std::optional<Subnet>& subnet);

}  // namespace mlswarm
