#pragma once

// A hyper-parameter sweep: the job spec its trials share, the space each trial's parameters
// are drawn from, and the scheduler that decides how far each trial trains. Checked once, at
// parse, so that every job spec a trial can draw is known to validate before the first starts.

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "asha.h"
#include "mlswarm/job.h"

namespace mlswarm {

/// How a searched field's values are drawn.
enum class ParamType {
  kChoice,      ///< one of `values`, with equal odds
  kUniform,     ///< a real in [min, max)
  kLogUniform,  ///< a real in [min, max) whose logarithm is uniform (0 < min)
  kInt,         ///< an integer in [min, max], both included
};

template <>
struct EnumNames<ParamType> {
  static constexpr std::array<std::pair<ParamType, std::string_view>, 4> table{{{ParamType::kChoice, "choice"},
                                                                                {ParamType::kUniform, "uniform"},
                                                                                {ParamType::kLogUniform, "log_uniform"},
                                                                                {ParamType::kInt, "int"}}};
};

/// One searched field. `name` is a numeric field of train_opts but epochs (lr, momentum,
/// weight_decay, label_smoothing, batch_size), an enum one (optimizer, lr_schedule, augment), or
/// model_type. Real fields take uniform, log_uniform or choice; batch_size int or choice; the
/// others choice.
struct ParamSpace {
  std::string name;
  ParamType type = ParamType::kChoice;
  std::vector<nlohmann::json> values;  ///< choice
  double min = 0;                      ///< uniform, log_uniform, int (integral for int)
  double max = 0;

  bool operator==(const ParamSpace&) const = default;
};

enum class SchedulerType { kRandom, kAsha };

template <>
struct EnumNames<SchedulerType> {
  static constexpr std::array<std::pair<SchedulerType, std::string_view>, 2> table{
      {{SchedulerType::kRandom, "random"}, {SchedulerType::kAsha, "asha"}}};
};

inline constexpr int kMaxSweepTrials = 1000;

/// A validated sweep, as `{"sweep_id", "trials", "seed", "base", "space", "scheduler", "parallel"}`.
struct SweepSpec {
  std::string sweep_id;  ///< a valid id; trial t's job and model are trial_id(sweep_id, t)
  int trials = 1;        ///< 1 .. kMaxSweepTrials, and under ASHA at least eta^(rungs - 1)
  std::uint64_t seed = 0;
  /// The job spec body every trial starts from, as the client sent it: kept as JSON so that
  /// defaults that hang on other fields (adam's lr) follow each trial's sampled values. Without
  /// job_id, model_id, attempt, placement and train_opts.epochs (and patience under ASHA). A
  /// searched field set here as well is overridden by each trial's sampled value.
  nlohmann::json base = nlohmann::json::object();
  std::vector<ParamSpace> space;  ///< by name, at least one
  SchedulerType scheduler = SchedulerType::kAsha;
  /// The rungs. {"type": "random", "epochs": E} is one rung of E epochs: min = max = E.
  AshaConfig asha;
  /// At most this many trials train at once; 0: as many as there are free trainer slots.
  int parallel = 0;
  /// {"name", ...rollout fields}: the best trial's model, once published as the sweep's, is
  /// rolled out onto this served name through the gate; null: none. Its name is checked here.
  nlohmann::json deploy;

  bool operator==(const SweepSpec&) const = default;
};

/// Parses and validates a sweep. Throws Error(kInvalidArgument) with a clear message and the
/// offending field's path ("space.lr.min", "base.train_opts.epochs", "scheduler.eta"). Each
/// choice value and each end of a range is checked by parse_job_spec on the base, so a sweep
/// accepts exactly what POST /train would for every trial.
SweepSpec parse_sweep_spec(const nlohmann::json& body);

/// What parse_sweep_spec reads back into an equal spec.
nlohmann::json to_json(const SweepSpec& spec);

/// "<sweep_id>-t<trial>": the job id and model id of a trial.
std::string trial_id(std::string_view sweep_id, int trial);

/// The job that trains trial `trial` toward rung `rung`: trial_id for rung 0, then
/// "<trial_id>-r<rung>". Every rung's job trains the one model trial_id.
std::string rung_job_id(std::string_view sweep_id, int trial, int rung);

/// True when `id` is one a sweep of `spec` owns: its own (its published model), a trial's
/// (trial_id: a model and its rung-0 job) or a rung job's (rung_job_id), for trials in range
/// and any rung. Ids are one namespace: a job, a model or another sweep may not take these.
bool sweep_claims(const SweepSpec& spec, std::string_view id);

/// `base` with `params` ({"lr": 0.01, "model_type": "mlp"}) set in it: model_type at the top,
/// the others in train_opts.
nlohmann::json with_params(nlohmann::json base, const nlohmann::json& params);

}  // namespace mlswarm
