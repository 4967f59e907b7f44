#include "searcher.h"

#include <algorithm>
#include <limits>
#include <variant>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "mlswarm/atomic_file.h"
#include "mlswarm/error.h"
#include "mlswarm/log.h"
#include "mlswarm/model_meta.h"
#include "sample.h"

namespace mlswarm {

using nlohmann::json;

namespace {

constexpr const char* kKind = "sweep";
/// A decision is a journal record of its own, "<sweep_id>#<n>" for the n-th (from 0): the
/// journal grows with decisions, not with their square, and creating decision n only once is
/// the compare-and-set that keeps two leaders from both taking it.
constexpr const char* kDecisionKind = "sweep-decision";

std::string decision_key(const std::string& sweep_id, std::size_t n) { return fmt::format("{}#{}", sweep_id, n); }

/// What the namespace check needs of a sweep's journaled body: its id and trial count.
std::optional<SweepSpec> claims_of(const json& body) {
  try {
    SweepSpec spec;
    spec.sweep_id = body.at("spec").at("sweep_id").get<std::string>();
    spec.trials = body.at("spec").at("trials").get<int>();
    return spec;
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

std::string describe(const SweepDecision& d) {
  switch (d.kind) {
    case SweepDecision::Kind::kStart:
      return fmt::format("start trial {}", d.trial);
    case SweepDecision::Kind::kPromote:
      return fmt::format("promote trial {} to rung {}", d.trial, d.rung);
    case SweepDecision::Kind::kStop:
      return fmt::format("stop trial {} at rung {}", d.trial, d.rung);
  }
  return "?";
}

}  // namespace

SweepSearcher::SweepSearcher(JobRegistry& registry, std::filesystem::path home_dir, SearcherHooks hooks,
                             SearcherOptions options)
    : registry_(registry), home_dir_(std::move(home_dir)), hooks_(std::move(hooks)), options_(options) {}

std::function<std::optional<JobRecord>(const std::string&)> SweepSearcher::finder(const std::string& sweep_id) const {
  return [this, sweep_id](const std::string& id) -> std::optional<JobRecord> {
    auto j = job(id);
    if (!j || j->spec.sweep_id != sweep_id) return std::nullopt;
    return j;
  };
}

SweepRecord SweepSearcher::record_of(const json& body) const {
  SweepRecord r = sweep_record_from_json(body);  // an older journal's decisions are in the body
  for (std::size_t n = r.decisions.size();; ++n) {
    auto decision = registry_.find_document(kDecisionKind, decision_key(r.spec.sweep_id, n));
    if (!decision) break;
    r.decisions.push_back(decision_from_json(*decision, r.spec.trials));
  }
  return r;
}

std::optional<SweepRecord> SweepSearcher::update(const std::string& id,
                                                 const std::function<bool(SweepRecord&)>& change) {
  std::optional<SweepRecord> out;
  registry_.update_document(kKind, id, [&](json& body) {
    SweepRecord r = record_of(body);
    if (!change(r)) return false;
    json next = to_json(r);
    next["decisions"] = body.value("decisions", json::array());  // decisions are records of their own
    body = std::move(next);
    out = std::move(r);
    return true;
  });
  return out;
}

std::optional<std::string> SweepSearcher::claimant(const std::string& id) const {
  for (const json& body : registry_.documents(kKind)) {
    if (auto spec = claims_of(body); spec && sweep_claims(*spec, id)) return spec->sweep_id;
  }
  return std::nullopt;
}

void SweepSearcher::check_namespace(const SweepSpec& spec) const {
  const std::string& id = spec.sweep_id;
  auto clash = [&](const std::string& what) {
    throw Error(ErrorCode::kConflict, fmt::format("sweep '{}' cannot be created: {}", id, what), "sweep_id");
  };
  int live = 0;
  for (const json& body : registry_.documents(kKind)) {
    const auto other = claims_of(body);
    if (!other) continue;
    if (other->sweep_id == id) clash("a sweep of that id exists");
    if (sweep_claims(*other, id)) clash(fmt::format("'{}' is an id of sweep '{}'", id, other->sweep_id));
    if (sweep_claims(spec, other->sweep_id)) {
      clash(fmt::format("its trials would take the id of sweep '{}'", other->sweep_id));
    }
    live += body.value("state", "") == "running" ? 1 : 0;
  }
  if (live >= options_.max_live_sweeps) {
    throw Error(ErrorCode::kTooManyRequests,
                fmt::format("{} sweeps are running, the most at once (MAX_LIVE_SWEEPS); wait for one to end", live));
  }
  std::error_code ec;
  if (registry_.find(id)) clash(fmt::format("'{}' is a job's id", id));
  if (std::filesystem::exists(model_dir(home_dir_, id), ec)) clash(fmt::format("model '{}' exists", id));
  const int rungs = static_cast<int>(rung_epochs(spec.asha).size());
  for (int trial = 0; trial < spec.trials; ++trial) {
    if (std::filesystem::exists(model_dir(home_dir_, trial_id(id, trial)), ec)) {
      clash(fmt::format("model '{}' exists: trial {} trains that model", trial_id(id, trial), trial));
    }
    for (int rung = 0; rung < std::max(1, rungs); ++rung) {
      if (registry_.find(rung_job_id(id, trial, rung))) {
        clash(fmt::format("job '{}' exists: trial {} needs that id", rung_job_id(id, trial, rung), trial));
      }
    }
  }
}

json SweepSearcher::create(const SweepSpec& spec) {
  const std::string& id = spec.sweep_id;
  if (spec.trials > options_.max_trials) {
    throw Error(ErrorCode::kInvalidArgument,
                fmt::format("trials ({}) may be at most {} (MAX_SWEEP_TRIALS)", spec.trials, options_.max_trials),
                "trials");
  }
  check_namespace(spec);
  SweepRecord record;
  record.spec = spec;
  record.created_at = unix_now();
  registry_.create_document(kKind, id, to_json(record));  // kConflict for a sweep of that id
  spdlog::info("sweep {}: accepted ({} trials, {} {}, seed {})", id, spec.trials, to_string(spec.scheduler),
               fmt::join(rung_epochs(spec.asha), "/"), spec.seed);
  return sweep_view(record, finder(id));
}

json SweepSearcher::cancel(const std::string& sweep_id) {
  if (!registry_.find_document(kKind, sweep_id)) {
    throw Error(ErrorCode::kNotFound, fmt::format("unknown sweep '{}'", sweep_id), "sweep_id");
  }
  bool ended = false;
  auto record = update(sweep_id, [&](SweepRecord& r) {
    if (r.state != SweepState::kRunning || r.best_trial) {
      ended = true;
      return false;
    }
    r.state = SweepState::kCancelled;
    r.finished_at = unix_now();
    return true;
  });
  if (ended || !record) {
    throw Error(ErrorCode::kConflict, fmt::format("sweep '{}' has already ended", sweep_id), "sweep_id");
  }
  spdlog::info("sweep {}: cancelled", sweep_id);
  cancel_trials(*record);
  return sweep_view(*record, finder(sweep_id));
}

std::optional<json> SweepSearcher::find(const std::string& sweep_id) const {
  auto body = registry_.find_document(kKind, sweep_id);
  if (!body) return std::nullopt;
  return sweep_view(record_of(*body), finder(sweep_id));
}

json SweepSearcher::list() const {
  json out = json::array();
  for (const json& body : registry_.documents(kKind)) {
    try {
      const SweepRecord record = record_of(body);
      json view = sweep_view(record, finder(record.spec.sweep_id));
      view.erase("trials");
      out.push_back(std::move(view));
    } catch (const std::exception& e) {
      spdlog::warn("a sweep record was skipped: {}", e.what());
    }
  }
  return out;
}

std::map<std::string, int> SweepSearcher::count_by_state() const {
  std::map<std::string, int> counts;
  for (const auto& [state, name] : EnumNames<SweepState>::table) counts[std::string(name)] = 0;
  for (const json& body : registry_.documents(kKind)) {
    const std::string state = body.value("state", "");
    if (counts.contains(state)) ++counts[state];
  }
  return counts;
}

void SweepSearcher::tick() {
  for (const json& body : registry_.documents(kKind)) {
    const std::string state = body.value("state", "");
    if (state == "succeeded" || state == "failed") continue;  // nothing left to do
    std::string id = "?";
    try {
      SweepRecord record = record_of(body);
      id = record.spec.sweep_id;
      if (record.state == SweepState::kRunning) {
        advance(std::move(record));
      } else if (record.state == SweepState::kCancelled) {
        cancel_trials(record);  // what a leader cut short in its cancel left running
      }
    } catch (const std::exception& e) {
      if (const std::size_t n = log_due("sweep " + id, std::chrono::seconds(60))) {
        spdlog::warn("sweep {}: {} (the next pass tries again){}", id, e.what(), repeats(n, std::chrono::seconds(60)));
      }
    }
  }
}

void SweepSearcher::advance(SweepRecord record) {
  submit_missing(record);
  if (const std::optional<int> best = record.best_trial) return finish(std::move(record), best);
  std::vector<TrialView> views = trial_views(record, finder(record.spec.sweep_id));
  journal_stops(record, views);
  int free = hooks_.free_slots ? hooks_.free_slots() : std::numeric_limits<int>::max();
  int running = static_cast<int>(std::count_if(views.begin(), views.end(), [](const auto& v) { return v.running; }));
  const int cap = record.spec.parallel > 0 ? record.spec.parallel : std::numeric_limits<int>::max();
  for (;;) {
    const AshaDecision next = next_decision(record.spec.asha, record.spec.trials, views);
    if (const auto* done = std::get_if<asha::Done>(&next)) return finish(std::move(record), done->best_trial);
    if (std::holds_alternative<asha::Wait>(next) || free <= 0 || running >= cap) return;
    SweepDecision decision;
    if (const auto* start = std::get_if<asha::Start>(&next)) {
      decision = {SweepDecision::Kind::kStart, start->trial, 0};
    } else {
      const auto& promote = std::get<asha::Promote>(next);
      decision = {SweepDecision::Kind::kPromote, promote.trial, promote.rung};
    }
    if (!journal(record, decision)) return;
    hooks_.submit(trial_job_spec(record.spec, decision.trial, decision.rung));
    if (decision.kind == SweepDecision::Kind::kStart) {
      views.push_back({decision.trial, {}, true, false});
    } else {
      for (auto& v : views) v.running = v.running || v.trial == decision.trial;
    }
    --free;
    ++running;
  }
}

void SweepSearcher::submit_missing(const SweepRecord& record) {
  const std::vector<int> tops = top_rungs(record);
  for (int trial = 0; trial < record.spec.trials; ++trial) {
    const int rung = tops[static_cast<std::size_t>(trial)];
    if (rung < 0 || registry_.find(rung_job_id(record.spec.sweep_id, trial, rung))) continue;
    spdlog::info("sweep {}: the job of trial {} rung {} was journaled but not submitted (a new leader); submitting it",
                 record.spec.sweep_id, trial, rung);
    try {
      hooks_.submit(trial_job_spec(record.spec, trial, rung));
    } catch (const Error& e) {
      if (e.code() != ErrorCode::kConflict) throw;  // created meanwhile: nothing to do
    }
  }
}

void SweepSearcher::journal_stops(SweepRecord& record, const std::vector<TrialView>& views) {
  const std::vector<TrialState> states = classify(record.spec.asha, record.spec.trials, views);
  std::vector<SweepDecision> stops;
  for (std::size_t i = 0; i < views.size(); ++i) {
    if (states[i] != TrialState::kStopped) continue;
    const SweepDecision stop{SweepDecision::Kind::kStop, views[i].trial, static_cast<int>(views[i].metrics.size()) - 1};
    if (std::find(record.decisions.begin(), record.decisions.end(), stop) == record.decisions.end()) {
      stops.push_back(stop);
    }
  }
  for (const auto& stop : stops) {
    if (!journal(record, stop)) return;
  }
}

bool SweepSearcher::journal(SweepRecord& record, const SweepDecision& decision) {
  const std::size_t seen = record.decisions.size();
  const auto body = registry_.find_document(kKind, record.spec.sweep_id);
  if (!body) return false;
  const SweepRecord now = record_of(*body);
  if (now.state != SweepState::kRunning || now.best_trial || now.decisions.size() != seen) return false;
  try {
    registry_.create_document(kDecisionKind, decision_key(record.spec.sweep_id, seen), to_json(decision));
  } catch (const Error& e) {
    if (e.code() == ErrorCode::kConflict) return false;  // decision `seen` was taken meanwhile
    throw;
  }
  record = now;
  record.decisions.push_back(decision);
  spdlog::info("sweep {}: {} (decision {})", record.spec.sweep_id, describe(decision), seen + 1);
  return true;
}

void SweepSearcher::end(const std::string& sweep_id, SweepState state, const std::string& why) {
  update(sweep_id, [&](SweepRecord& r) {
    if (r.state != SweepState::kRunning) return false;  // it ended already
    r.state = state;
    r.error = why;
    r.published = state == SweepState::kSucceeded;
    r.finished_at = unix_now();
    return true;
  });
}

void SweepSearcher::fail(const std::string& sweep_id, const std::string& why) {
  end(sweep_id, SweepState::kFailed, why);
  spdlog::error("sweep {}: failed: {}", sweep_id, why);
}

void SweepSearcher::finish(SweepRecord record, std::optional<int> best) {
  const std::string id = record.spec.sweep_id;
  if (!best) return fail(id, "no trial finished a rung");
  if (!record.best_trial) {
    auto next = update(id, [&](SweepRecord& r) {
      if (r.state != SweepState::kRunning || r.best_trial) return false;
      r.best_trial = best;
      return true;
    });
    if (!next) return;
    record = std::move(*next);
    spdlog::info("sweep {}: done; the best is trial {}; publishing its model as {}", id, *best, id);
  }
  if (const std::optional<std::string> lost = publish(record)) return fail(id, *lost);
  end(id, SweepState::kSucceeded, "");
  spdlog::info("sweep {}: succeeded; model {} is trial {}'s (model {})", id, id, *record.best_trial,
               trial_id(id, *record.best_trial));
}

std::optional<std::string> SweepSearcher::publish(const SweepRecord& record) {
  // The trial's model as the sweep's: model.pt as it is (sealed), meta.json naming the sweep.
  // Each file is written atomically and again by whoever leads next if this is cut short.
  const std::string trial_model = trial_id(record.spec.sweep_id, *record.best_trial);
  const auto from = model_dir(home_dir_, trial_model);
  const auto to = model_dir(home_dir_, record.spec.sweep_id);
  ModelMeta meta;
  std::string weights;
  try {
    require_not_symlink(from, "model_id");
    meta = model_meta_from_json(json::parse(read_file(from / "meta.json", 64u << 20)));
    weights = read_file(from / "model.pt", std::size_t{1} << 32);
  } catch (const std::exception& e) {
    // The best trial's files are gone or broken: no later pass can publish them.
    return fmt::format("the best trial's model {} cannot be read: {}", trial_model, e.what());
  }
  std::filesystem::create_directories(to);
  require_not_symlink(to, "sweep_id");
  meta.model_id = record.spec.sweep_id;
  const std::string meta_text = to_json(meta).dump(2);
  // Its version kept as a trainer keeps one (versions/<n>/ first), so that it can be pinned and
  // served by number, as a deployment or a rollout does; then the latest.
  const auto version_dir = model_version_dir(home_dir_, record.spec.sweep_id, std::max(1, meta.version));
  std::filesystem::create_directories(version_dir);
  write_file_atomic(version_dir / "model.pt", weights);  // a failed write throws: the next pass tries again
  write_file_atomic(version_dir / "meta.json", meta_text);
  write_file_atomic(to / "model.pt", weights);
  write_file_atomic(to / "meta.json", meta_text);
  return std::nullopt;
}

void SweepSearcher::cancel_trials(const SweepRecord& record) {
  const std::vector<int> tops = top_rungs(record);
  for (int trial = 0; trial < record.spec.trials; ++trial) {
    const int rung = tops[static_cast<std::size_t>(trial)];
    if (rung < 0) continue;
    const std::string id = rung_job_id(record.spec.sweep_id, trial, rung);
    auto j = finder(record.spec.sweep_id)(id);
    if (!j || is_terminal(j->state)) continue;
    try {
      hooks_.cancel(id);
    } catch (const Error& e) {
      spdlog::warn("sweep {}: cannot cancel job {}: {}", record.spec.sweep_id, id, e.what());
    }
  }
}

}  // namespace mlswarm
