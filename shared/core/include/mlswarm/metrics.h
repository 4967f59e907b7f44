#pragma once

#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace mlswarm {

using MetricLabels = std::vector<std::pair<std::string, std::string>>;

/// A process-wide registry of Prometheus metrics (counters, gauges, histograms with labels),
/// rendered in the text exposition format for GET /metrics. Thread-safe: `mutex_` guards
/// every family; collectors run under it at render time and must only call set().
class Metrics {
 public:
  static Metrics& global();

  void describe(const std::string& name, std::string_view type, std::string_view help);
  void inc(const std::string& name, const MetricLabels& labels = {}, double by = 1);
  void set(const std::string& name, const MetricLabels& labels, double value);
  /// Histogram observation (seconds), buckets from 1 ms to 60 s.
  void observe(const std::string& name, const MetricLabels& labels, double value);
  /// Clears a gauge family's series (before a collector sets the current ones).
  void reset(const std::string& name);
  /// A function run at every render to refresh gauges (jobs by state, trainers, ...).
  /// Returns a handle for remove_collector, which its owner must call before it goes away.
  int add_collector(std::function<void(Metrics&)> collector);
  void remove_collector(int handle);

  std::string render();

 private:
  struct Series {
    double value = 0;
    std::vector<double> buckets;  // cumulative at render, per-bucket counts here
    double sum = 0;
    std::uint64_t count = 0;
  };
  struct Family {
    std::string type = "untyped";
    std::string help;
    std::map<std::string, Series> series;  // by rendered label set
  };
  Family& family(const std::string& name);

  std::recursive_mutex mutex_;
  std::map<std::string, Family> families_;
  std::map<int, std::function<void(Metrics&)>> collectors_;
  int next_collector_ = 1;
};

}  // namespace mlswarm
