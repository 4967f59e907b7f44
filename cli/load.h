#pragma once

#include <chrono>
#include <string>
#include <utility>
#include <vector>

#include "mlswarm/ports.h"

namespace mlswarm::cli_tool {

/// `mlswarm load`: a closed-loop load generator for /predict (or any POST route).
struct LoadOptions {
  std::string url =
      "http://localhost:" +
      std::to_string(kDefaultControllerPort);  ///< a name that resolves to several replicas spreads the clients
  std::string token;                           ///< bearer token, if the controller needs one
  std::string path = "/predict";
  std::string body;  ///< the POST body
  std::string content_type = "application/json";
  std::vector<std::pair<std::string, std::string>> headers;  ///< sent with every request
  int clients = 16;
  /// Event loops the clients are spread over (one: the generator takes as little as it can of
  /// a machine it shares with the server it measures).
  int threads = 1;
  std::chrono::duration<double> seconds{10};
  std::chrono::duration<double> warmup{2};
  std::string label = "server";
  int expect_status = 200;  ///< the status an answer must have (404: measure a route's refusals)
  /// When set, each client sends this header with a value of its own ("client-<n>"): a served
  /// name's canary splits requests by it (X-Request-Key), sticky per client.
  std::string key_header;
  /// Also print each second's requests and p99 (`"per_second"`): how latency follows a change.
  bool per_second = false;
};

/// Runs the load and prints one JSON line: requests, requests/s, p50/p99 latency, failures.
/// The clients share `threads` event loops. Each client keeps its connection alive; when the server asks to close it (a
/// replica draining) or the connection fails, the client resolves the name again and reconnects, and a request that got
/// no answer at all is sent again, on each of the name's addresses once. Only a request no address answered, or any
/// reply other than `expect_status`, is a failure. Returns the exit code (1 when any request failed or none succeeded).
int run_load(const LoadOptions& options);

}  // namespace mlswarm::cli_tool
