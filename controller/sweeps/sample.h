#pragma once

// Each trial's parameters, drawn from the sweep's space as a pure function of (seed, trial):
// the same on every run and machine, whatever order trials are drawn in, so that a controller
// replaying its journal rebuilds the same jobs.

#include <nlohmann/json.hpp>

#include "mlswarm/job.h"
#include "sweep_spec.h"

namespace mlswarm {

/// Trial `trial`'s value of every searched field, by name: {"batch_size": 64, "lr": 0.0123}.
/// Each field draws 64 bits from splitmix64 over (seed, trial, the field's name), so adding a
/// field to the space leaves the others' draws alone. Throws Error(kInvalidArgument, "trial")
/// unless 0 <= trial < spec.trials.
nlohmann::json sample_params(const SweepSpec& spec, int trial);

/// The job that trains trial `trial` to rung `rung`: the base with the trial's parameters,
/// epochs the last rung's (one learning-rate schedule for every rung) and stop_after_epoch this
/// rung's; job_id rung_job_id, model_id trial_id; from rung 1 on it resumes from the job of the
/// rung before. Throws Error(kInvalidArgument) for a trial or rung out of range.
JobSpec trial_job_spec(const SweepSpec& spec, int trial, int rung);

}  // namespace mlswarm
