#include "sweep_record.h"

#include <algorithm>

#include <fmt/format.h>

#include "mlswarm/error.h"
#include "mlswarm/json_fields.h"
#include "sample.h"

namespace mlswarm {

using nlohmann::json;

namespace {

/// The job of `trial` at `rung`, when it exists.
std::optional<JobRecord> rung_job(const SweepRecord& r, int trial, int rung,
                                  const std::function<std::optional<JobRecord>(const std::string&)>& find) {
  return find(rung_job_id(r.spec.sweep_id, trial, rung));
}

std::string trial_state_name(TrialState state, SweepState sweep) {
  const bool open = state == TrialState::kRunning || state == TrialState::kPaused;
  if (open && sweep == SweepState::kCancelled) return "cancelled";
  return std::string(to_string(state));
}

/// Trainer-seconds a job has used: its running time on each of its trainers.
double trainer_seconds(const JobRecord& job, double now) {
  if (job.started_at <= 0) return 0;
  const double end = job.finished_at > 0 ? job.finished_at : now;
  return std::max(0.0, end - job.started_at) * job.spec.trainers;
}

}  // namespace

json to_json(const SweepDecision& d) {
  switch (d.kind) {
    case SweepDecision::Kind::kStart:
      return {{"start", d.trial}};
    case SweepDecision::Kind::kPromote:
      return {{"promote", d.trial}, {"rung", d.rung}};
    case SweepDecision::Kind::kStop:
      return {{"stop", d.trial}, {"rung", d.rung}};
  }
  return nullptr;
}

SweepDecision decision_from_json(const json& j, int trials) {
  SweepDecision d;
  for (const auto& [key, kind] :
       {std::pair{"start", SweepDecision::Kind::kStart}, std::pair{"promote", SweepDecision::Kind::kPromote},
        std::pair{"stop", SweepDecision::Kind::kStop}}) {
    if (!j.contains(key)) continue;
    d.kind = kind;
    d.trial = static_cast<int>(checked_int(j.at(key), 0, trials - 1, "decision trial"));
    d.rung = static_cast<int>(checked_int_or(j, "rung", 0, 0, 64));
    return d;
  }
  throw Error(ErrorCode::kDataError, fmt::format("unknown sweep decision {}", j.dump()));
}

json to_json(const SweepRecord& r) {
  json decisions = json::array();
  for (const auto& d : r.decisions) decisions.push_back(to_json(d));
  json out = {{"spec", to_json(r.spec)},  {"state", to_string(r.state)}, {"decisions", std::move(decisions)},
              {"published", r.published}, {"created_at", r.created_at},  {"finished_at", r.finished_at}};
  out["best_trial"] = r.best_trial ? json(*r.best_trial) : json(nullptr);
  if (!r.error.empty()) out["error"] = r.error;
  return out;
}

SweepRecord sweep_record_from_json(const json& j) {
  try {
    SweepRecord r;
    r.spec = parse_sweep_spec(j.at("spec"));
    const auto state = parse_choice<SweepState>(j.at("state").get<std::string>());
    if (!state) throw Error(ErrorCode::kDataError, "unknown sweep state");
    r.state = *state;
    for (const auto& d : j.at("decisions")) r.decisions.push_back(decision_from_json(d, r.spec.trials));
    if (!j.at("best_trial").is_null()) {
      r.best_trial = static_cast<int>(checked_int(j.at("best_trial"), 0, r.spec.trials - 1, "best_trial"));
    }
    r.published = j.at("published").get<bool>();
    r.error = j.value("error", "");
    r.created_at = j.at("created_at").get<double>();
    r.finished_at = j.at("finished_at").get<double>();
    return r;
  } catch (const Error& e) {
    throw Error(ErrorCode::kDataError, fmt::format("a sweep record does not read back: {}", e.what()));
  } catch (const std::exception& e) {
    throw Error(ErrorCode::kDataError, fmt::format("a sweep record does not read back: {}", e.what()));
  }
}

std::vector<int> top_rungs(const SweepRecord& record) {
  std::vector<int> rung(static_cast<std::size_t>(record.spec.trials), -1);
  for (const auto& d : record.decisions) {
    auto& r = rung[static_cast<std::size_t>(d.trial)];
    if (d.kind == SweepDecision::Kind::kStart) r = std::max(r, 0);
    if (d.kind == SweepDecision::Kind::kPromote) r = std::max(r, d.rung);
  }
  return rung;
}

std::vector<TrialView> trial_views(const SweepRecord& record,
                                   const std::function<std::optional<JobRecord>(const std::string&)>& find) {
  std::vector<TrialView> views;
  const std::vector<int> rungs = top_rungs(record);
  for (int trial = 0; trial < record.spec.trials; ++trial) {
    const int top = rungs[static_cast<std::size_t>(trial)];
    if (top < 0) continue;
    TrialView view{trial, {}, false, false};
    for (int rung = 0; rung <= top && !view.running && !view.failed; ++rung) {
      const auto job = rung_job(record, trial, rung, find);
      if (!job || !is_terminal(job->state)) {
        view.running = true;  // queued, running, or journaled and about to be submitted
      } else if (job->state == JobState::kSucceeded && job->progress.accuracy) {
        view.metrics.push_back(*job->progress.accuracy);
      } else {
        view.failed = true;  // failed, cancelled, or succeeded without a test accuracy
      }
    }
    views.push_back(std::move(view));
  }
  return views;
}

namespace {

/// One trial of GET /sweeps/{id}; adds the trainer-seconds of its jobs to `seconds`.
json trial_json(const SweepRecord& record, const TrialView& v, TrialState state, int top,
                const std::function<std::optional<JobRecord>(const std::string&)>& find, double& seconds) {
  const std::vector<int> rungs = rung_epochs(record.spec.asha);
  const double now = unix_now();
  json jobs = json::array();
  json progress = nullptr;
  for (int rung = 0; rung <= top; ++rung) {
    const std::string id = rung_job_id(record.spec.sweep_id, v.trial, rung);
    jobs.push_back(id);
    if (auto job = find(id)) {
      seconds += trainer_seconds(*job, now);
      if (rung == top) progress = job->progress.fraction;
    }
  }
  return {{"trial", v.trial},
          {"params", sample_params(record.spec, v.trial)},
          {"rung", top},
          {"epochs", v.metrics.empty() ? 0 : rungs[v.metrics.size() - 1]},
          {"state", trial_state_name(state, record.state)},
          {"metrics", v.metrics},
          {"accuracy", v.metrics.empty() ? json(nullptr) : json(v.metrics.back())},
          {"progress", progress},
          {"model_id", trial_id(record.spec.sweep_id, v.trial)},
          {"jobs", std::move(jobs)}};
}

/// The trials that finished a rung: the furthest rung first, then the better accuracy, then the lower id.
json leaderboard_of(const std::vector<TrialView>& views) {
  std::vector<const TrialView*> order;
  for (const auto& v : views) {
    if (!v.metrics.empty()) order.push_back(&v);
  }
  std::stable_sort(order.begin(), order.end(), [](const TrialView* a, const TrialView* b) {
    if (a->metrics.size() != b->metrics.size()) return a->metrics.size() > b->metrics.size();
    return a->metrics.back() > b->metrics.back();
  });
  json out = json::array();
  for (const TrialView* v : order) out.push_back(v->trial);
  return out;
}

}  // namespace

json sweep_view(const SweepRecord& record, const std::function<std::optional<JobRecord>(const std::string&)>& find) {
  const std::vector<TrialView> views = trial_views(record, find);
  const std::vector<TrialState> states = classify(record.spec.asha, record.spec.trials, views);
  const std::vector<int> tops = top_rungs(record);
  double seconds = 0;
  json trials = json::array();
  for (std::size_t i = 0; i < views.size(); ++i) {
    trials.push_back(
        trial_json(record, views[i], states[i], tops[static_cast<std::size_t>(views[i].trial)], find, seconds));
  }
  json best = nullptr;
  if (record.best_trial) {
    for (const auto& t : trials) {
      if (t["trial"] == *record.best_trial) best = t;
    }
    if (record.published) best["published_as"] = record.spec.sweep_id;
  }
  json out = to_json(record);
  out["sweep_id"] = record.spec.sweep_id;
  out["rungs"] = rung_epochs(record.spec.asha);
  out["trials"] = std::move(trials);
  out["leaderboard"] = leaderboard_of(views);
  out["best"] = std::move(best);
  out["trainer_seconds"] = seconds;
  out["decisions"] = record.decisions.size();
  return out;
}

}  // namespace mlswarm
