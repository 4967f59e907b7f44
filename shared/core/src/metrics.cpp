#include "mlswarm/metrics.h"

#include <cmath>

#include <fmt/format.h>

namespace mlswarm {
namespace {

const std::vector<double>& bucket_bounds() {
  static const std::vector<double> kBounds = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                              0.5,   1,      2.5,   5,    10,    30,   60};
  return kBounds;
}

std::string escape(std::string_view value) {
  std::string out;
  for (char c : value) {
    if (c == '\\' || c == '"') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out;
}

std::string render_labels(const MetricLabels& labels) {
  if (labels.empty()) return {};
  std::string out = "{";
  for (std::size_t i = 0; i < labels.size(); ++i) {
    out += fmt::format("{}{}=\"{}\"", i ? "," : "", labels[i].first, escape(labels[i].second));
  }
  return out + "}";
}

/// Adds `le` to a rendered label set.
std::string with_le(const std::string& labels, const std::string& le) {
  if (labels.empty()) return fmt::format("{{le=\"{}\"}}", le);
  return fmt::format("{},le=\"{}\"}}", labels.substr(0, labels.size() - 1), le);
}

std::string number(double v) {
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  return fmt::format("{}", v);
}

}  // namespace

Metrics& Metrics::global() {
  static Metrics metrics;
  return metrics;
}

Metrics::Family& Metrics::family(const std::string& name) { return families_[name]; }

void Metrics::describe(const std::string& name, std::string_view type, std::string_view help) {
  std::lock_guard lock(mutex_);
  auto& f = family(name);
  f.type = type;
  f.help = help;
}

void Metrics::inc(const std::string& name, const MetricLabels& labels, double by) {
  std::lock_guard lock(mutex_);
  family(name).series[render_labels(labels)].value += by;
}

void Metrics::set(const std::string& name, const MetricLabels& labels, double value) {
  std::lock_guard lock(mutex_);
  family(name).series[render_labels(labels)].value = value;
}

void Metrics::observe(const std::string& name, const MetricLabels& labels, double value) {
  std::lock_guard lock(mutex_);
  Series& s = family(name).series[render_labels(labels)];
  const auto& bounds = bucket_bounds();
  if (s.buckets.empty()) s.buckets.assign(bounds.size(), 0);
  for (std::size_t i = 0; i < bounds.size(); ++i) {
    if (value <= bounds[i]) {
      s.buckets[i] += 1;
      break;
    }
  }
  s.sum += value;
  s.count += 1;
}

void Metrics::reset(const std::string& name) {
  std::lock_guard lock(mutex_);
  family(name).series.clear();
}

int Metrics::add_collector(std::function<void(Metrics&)> collector) {
  std::lock_guard lock(mutex_);
  collectors_[next_collector_] = std::move(collector);
  return next_collector_++;
}

void Metrics::remove_collector(int handle) {
  std::lock_guard lock(mutex_);
  collectors_.erase(handle);
}

std::string Metrics::render() {
  std::lock_guard lock(mutex_);
  for (auto& [handle, collect] : collectors_) collect(*this);
  std::string out;
  for (const auto& [name, f] : families_) {
    if (!f.help.empty()) out += fmt::format("# HELP {} {}\n", name, f.help);
    out += fmt::format("# TYPE {} {}\n", name, f.type);
    for (const auto& [labels, s] : f.series) {
      if (f.type != "histogram") {
        out += fmt::format("{}{} {}\n", name, labels, number(s.value));
        continue;
      }
      double cumulative = 0;
      const auto& bounds = bucket_bounds();
      for (std::size_t i = 0; i < bounds.size(); ++i) {
        cumulative += i < s.buckets.size() ? s.buckets[i] : 0;
        out += fmt::format("{}_bucket{} {}\n", name, with_le(labels, number(bounds[i])), number(cumulative));
      }
      out += fmt::format("{}_bucket{} {}\n", name, with_le(labels, "+Inf"), s.count);
      out += fmt::format("{}_sum{} {}\n", name, labels, number(s.sum));
      out += fmt::format("{}_count{} {}\n", name, labels, s.count);
    }
  }
  return out;
}

}  // namespace mlswarm
