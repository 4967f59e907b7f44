#include "sample.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string_view>

#include <fmt/format.h>

#include "mlswarm/error.h"

namespace mlswarm {
namespace {

using nlohmann::json;

/// Steele, Lea and Flood's splitmix64 finaliser: a bijection of 64 bits whose outputs for
/// consecutive inputs look independent, so a counter (seed, trial, field) needs no state.
std::uint64_t splitmix64(std::uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

/// FNV-1a: a name's hash that, unlike std::hash, is the same in every standard library.
std::uint64_t fnv1a(std::string_view text) {
  std::uint64_t hash = 0xcbf29ce484222325ULL;
  for (const char c : text) {
    hash ^= static_cast<unsigned char>(c);
    hash *= 0x100000001b3ULL;
  }
  return hash;
}

std::uint64_t draw(std::uint64_t seed, int trial, std::string_view field) {
  return splitmix64(splitmix64(splitmix64(seed) ^ static_cast<std::uint64_t>(trial)) ^ fnv1a(field));
}

/// [0, 1) from the top 53 bits: every value a multiple of 2^-53, each equally likely, exact in a
/// double (what std::uniform_real_distribution does differs between standard libraries).
double unit(std::uint64_t bits) { return static_cast<double>(bits >> 11) * 0x1.0p-53; }

/// min + u (max - min), kept below max where rounding would reach it.
double between(double min, double max, double u) { return std::min(min + u * (max - min), std::nextafter(max, min)); }

json sample_one(const ParamSpace& param, double u) {
  switch (param.type) {
    case ParamType::kChoice: {
      const std::size_t n = param.values.size();
      return param.values[std::min(n - 1, static_cast<std::size_t>(u * static_cast<double>(n)))];
    }
    case ParamType::kUniform:
      return between(param.min, param.max, u);
    case ParamType::kLogUniform: {
      // log and exp are the C library's: the same for every controller built from one image.
      const double value = std::exp(between(std::log(param.min), std::log(param.max), u));
      return std::clamp(value, param.min, std::nextafter(param.max, param.min));
    }
    case ParamType::kInt: {
      // The one int field, batch_size, spans at most 1..65536 (parse): u * width has no visible bias.
      const auto min = static_cast<std::int64_t>(param.min);
      const auto max = static_cast<std::int64_t>(param.max);
      const auto offset = static_cast<std::int64_t>(u * (static_cast<double>(max - min) + 1.0));
      return std::min(max, min + offset);
    }
  }
  return nullptr;
}

void check_trial(const SweepSpec& spec, int trial) {
  if (trial < 0 || trial >= spec.trials) {
    throw Error(ErrorCode::kInvalidArgument, fmt::format("trial {} is outside 0..{}", trial, spec.trials - 1), "trial");
  }
}

}  // namespace

json sample_params(const SweepSpec& spec, int trial) {
  check_trial(spec, trial);
  json params = json::object();
  for (const ParamSpace& param : spec.space) {
    params[param.name] = sample_one(param, unit(draw(spec.seed, trial, param.name)));
  }
  return params;
}

JobSpec trial_job_spec(const SweepSpec& spec, int trial, int rung) {
  const std::vector<int> rungs = rung_epochs(spec.asha);
  if (rung < 0 || rung >= static_cast<int>(rungs.size())) {
    throw Error(ErrorCode::kInvalidArgument, fmt::format("rung {} is outside 0..{}", rung, rungs.size() - 1), "rung");
  }
  json body = with_params(spec.base, sample_params(spec, trial));
  // Every rung trains on the schedule of the last: a promotion carries on, not starts anew.
  body["train_opts"]["epochs"] = spec.asha.max_epochs;
  if (rungs[static_cast<std::size_t>(rung)] < spec.asha.max_epochs) {
    body["stop_after_epoch"] = rungs[static_cast<std::size_t>(rung)];
  }
  body["job_id"] = rung_job_id(spec.sweep_id, trial, rung);
  body["model_id"] = trial_id(spec.sweep_id, trial);
  if (rung > 0) body["resume_from"] = rung_job_id(spec.sweep_id, trial, rung - 1);
  body["sweep_id"] = spec.sweep_id;
  body["trial"] = trial;
  return parse_job_spec(body);
}

}  // namespace mlswarm
