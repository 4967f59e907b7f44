#include "rollout.h"

#include <algorithm>
#include <cmath>

#include <fmt/format.h>

#include "mlswarm/error.h"
#include "mlswarm/ids.h"
#include "mlswarm/json_fields.h"
#include "mlswarm/request_fields.h"

namespace mlswarm {

using nlohmann::json;

bool rollout_ended(RolloutState state) {
  return state == RolloutState::kPromoted || state == RolloutState::kRolledBack || state == RolloutState::kAborted;
}

int RolloutRecord::weight() const {
  if (state == RolloutState::kCanary && step >= 0 && step < static_cast<int>(spec.steps.size())) {
    return spec.steps[static_cast<std::size_t>(step)];
  }
  return state == RolloutState::kPromoted ? 100 : 0;
}

namespace {

RolloutGates parse_gates(const json& body) {
  RolloutGates g;
  if (!body.contains("gates") || body["gates"].is_null()) return g;
  const json& gates = body["gates"];
  if (!gates.is_object()) invalid_field("gates", "gates must be an object");
  reject_unknown_fields(
      gates, {"max_accuracy_drop", "max_class_recall_drop", "min_agreement", "max_error_rate", "max_p99_ms"}, "gates.");
  g.max_accuracy_drop = get_number(gates, "max_accuracy_drop", "gates.max_accuracy_drop", g.max_accuracy_drop, 0, 1);
  g.max_class_recall_drop =
      get_number(gates, "max_class_recall_drop", "gates.max_class_recall_drop", g.max_class_recall_drop, 0, 1);
  g.min_agreement = get_number(gates, "min_agreement", "gates.min_agreement", g.min_agreement, 0, 1);
  g.max_error_rate = get_number(gates, "max_error_rate", "gates.max_error_rate", g.max_error_rate, 0, 1);
  g.max_p99_ms = get_number(gates, "max_p99_ms", "gates.max_p99_ms", g.max_p99_ms, 0, 600000);
  return g;
}

std::vector<int> parse_steps(const json& body) {
  if (!body.contains("steps") || body["steps"].is_null()) return RolloutSpec{}.steps;
  const json& steps = body["steps"];
  if (!steps.is_array() || steps.size() > 20) invalid_field("steps", "steps must be a list of at most 20 weights");
  std::vector<int> out;
  for (std::size_t i = 0; i < steps.size(); ++i) {
    const auto w = json_integer(steps[i]);
    if (!w || *w < 1 || *w > 100) invalid_field("steps", "each step is a weight (percent of requests) in 1..100");
    if (!out.empty() && *w <= out.back()) invalid_field("steps", "steps must rise");
    out.push_back(static_cast<int>(*w));
  }
  return out;
}

std::optional<std::pair<std::int64_t, std::int64_t>> parse_range(const json& body) {
  if (!body.contains("eval_idxs") || body["eval_idxs"].is_null()) return std::nullopt;
  const json& r = body["eval_idxs"];
  const auto from = r.is_array() && r.size() == 2 ? json_integer(r[0]) : std::nullopt;
  const auto to = r.is_array() && r.size() == 2 ? json_integer(r[1]) : std::nullopt;
  if (!from || !to || *from < 0 || *to <= *from || *to > (std::int64_t{1} << 31)) {
    invalid_field("eval_idxs", "eval_idxs must be [from, to) of the test split, 0 <= from < to");
  }
  return std::make_pair(*from, *to);
}

}  // namespace

RolloutSpec parse_rollout_spec(const json& body) {
  if (!body.is_object()) invalid_field("", "the body must be a JSON object");
  reject_unknown_fields(body,
                        {"model_id", "version", "eval_idxs", "shadow_seconds", "shadow_percent", "steps",
                         "step_seconds", "min_requests", "gates"},
                        "");
  RolloutSpec spec;
  if (!body.contains("model_id") || !body["model_id"].is_string()) {
    invalid_field("model_id", "model_id (the candidate, a string) is required");
  }
  spec.candidate.model_id = body["model_id"].get<std::string>();
  require_valid_id(spec.candidate.model_id, "model_id");
  spec.candidate.version = static_cast<int>(get_int(body, "version", "version", 0, 0, 99999999));
  spec.eval_idxs = parse_range(body);
  spec.shadow_seconds = static_cast<int>(get_int(body, "shadow_seconds", "shadow_seconds", 60, 0, 86400));
  spec.shadow_percent = static_cast<int>(get_int(body, "shadow_percent", "shadow_percent", 100, 1, 100));
  spec.steps = parse_steps(body);
  spec.step_seconds = static_cast<int>(get_int(body, "step_seconds", "step_seconds", 120, 1, 86400));
  spec.min_requests = static_cast<int>(get_int(body, "min_requests", "min_requests", 10, 0, 1000000));
  spec.gates = parse_gates(body);
  return spec;
}

RolloutSpec deploy_rollout_spec(const json& deploy, const std::string& model_id) {
  if (!deploy.is_object()) invalid_field("deploy", "deploy must be an object");
  json body = deploy;
  body.erase("name");
  if (body.contains("model_id") || body.contains("version")) {
    invalid_field("deploy.model_id", "deploy rolls out the model this job trains (its latest version): no model_id");
  }
  body["model_id"] = model_id;
  try {
    return parse_rollout_spec(body);
  } catch (const Error& e) {
    if (e.code() != ErrorCode::kInvalidArgument) throw;
    invalid_field("deploy." + e.field(), std::string("deploy: ") + e.what());
  }
}

json to_json(const RolloutSpec& s) {
  json out = {{"model_id", s.candidate.model_id},
              {"version", s.candidate.version},
              {"shadow_seconds", s.shadow_seconds},
              {"shadow_percent", s.shadow_percent},
              {"steps", s.steps},
              {"step_seconds", s.step_seconds},
              {"min_requests", s.min_requests},
              {"gates",
               {{"max_accuracy_drop", s.gates.max_accuracy_drop},
                {"max_class_recall_drop", s.gates.max_class_recall_drop},
                {"min_agreement", s.gates.min_agreement},
                {"max_error_rate", s.gates.max_error_rate},
                {"max_p99_ms", s.gates.max_p99_ms}}}};
  out["eval_idxs"] = s.eval_idxs ? json{s.eval_idxs->first, s.eval_idxs->second} : json(nullptr);
  return out;
}

std::vector<GateResult> judge_evaluation(const RolloutGates& gates, const EvaluationFigures& f) {
  std::vector<GateResult> out;
  const double drop = f.stable_accuracy - f.candidate_accuracy;
  out.push_back({"accuracy_drop", drop, gates.max_accuracy_drop, true, drop <= gates.max_accuracy_drop + 1e-12});
  const std::size_t classes = std::min(f.stable_recall.size(), f.candidate_recall.size());
  for (std::size_t c = 0; c < classes; ++c) {
    const double class_drop = f.stable_recall[c] - f.candidate_recall[c];
    const std::string name = c < f.classes.size() ? f.classes[c] : std::to_string(c);
    out.push_back({"class_recall_drop:" + name, class_drop, gates.max_class_recall_drop, true,
                   class_drop <= gates.max_class_recall_drop + 1e-12});
  }
  return out;
}

std::vector<GateResult> judge_traffic(const RolloutGates& gates, const TrafficFigures& f) {
  std::vector<GateResult> out;
  const double errors = f.requests > 0 ? static_cast<double>(f.errors) / static_cast<double>(f.requests) : 0;
  out.push_back({"error_rate", errors, gates.max_error_rate, true, errors <= gates.max_error_rate + 1e-12});
  if (f.compared > 0) {
    const double agreement = static_cast<double>(f.agreed) / static_cast<double>(f.compared);
    out.push_back({"agreement", agreement, gates.min_agreement, false, agreement + 1e-12 >= gates.min_agreement});
  }
  if (gates.max_p99_ms > 0) {
    out.push_back({"p99_ms", f.p99_ms, gates.max_p99_ms, true, f.p99_ms <= gates.max_p99_ms});
  }
  return out;
}

namespace {

/// "gate figure > limit" for the first failed verdict, or "".
std::string first_failure(const std::vector<GateResult>& gates) {
  for (const auto& g : gates) {
    if (!g.passed) {
      return fmt::format("{} {:.4g} {} the limit {:.4g}", g.gate, g.figure, g.at_most ? "above" : "below", g.limit);
    }
  }
  return {};
}

/// After the phase that passed: the shadow, the first canary step, or promotion.
RolloutDecision next_phase(const RolloutRecord& r, bool from_shadow, std::vector<GateResult> gates) {
  RolloutDecision d;
  d.gates = std::move(gates);
  const int next = r.state == RolloutState::kCanary ? r.step + 1 : 0;
  if (r.state == RolloutState::kEvaluating && r.spec.shadow_seconds > 0 && !from_shadow) {
    d.kind = RolloutDecision::Kind::kShadow;
    d.reason = "the evaluation passed";
  } else if (next < static_cast<int>(r.spec.steps.size())) {
    d.kind = RolloutDecision::Kind::kCanaryStep;
    d.step = next;
    d.reason = r.state == RolloutState::kCanary ? fmt::format("step {} passed", r.step + 1)
               : from_shadow                    ? std::string("the shadow phase passed")
                                                : std::string("the evaluation passed");
  } else {
    d.kind = RolloutDecision::Kind::kPromote;
    d.reason = r.state == RolloutState::kCanary ? "the last step passed" : "every phase passed";
  }
  return d;
}

RolloutDecision roll_back(std::string reason, std::vector<GateResult> gates) {
  RolloutDecision d;
  d.kind = RolloutDecision::Kind::kRollBack;
  d.reason = std::move(reason);
  d.gates = std::move(gates);
  return d;
}

RolloutDecision decide_live(const RolloutRecord& r, const TrafficFigures& phase, double now) {
  const bool shadow = r.state == RolloutState::kShadow;
  const double length = shadow ? r.spec.shadow_seconds : r.spec.step_seconds;
  const double elapsed = now - r.phase_started_at;
  if (elapsed < length) return {};
  const std::string phase_name = shadow ? std::string("the shadow phase") : fmt::format("step {}", r.step + 1);
  if (phase.requests < r.spec.min_requests) {
    if (elapsed < 3 * length) return {};  // extended: too few requests to judge yet
    return roll_back(fmt::format("{} saw {} candidate requests in {:.0f} s, fewer than min_requests {}", phase_name,
                                 phase.requests, elapsed, r.spec.min_requests),
                     {});
  }
  std::vector<GateResult> gates = judge_traffic(r.spec.gates, phase);
  if (const std::string failed = first_failure(gates); !failed.empty()) {
    return roll_back(fmt::format("{}: {} ({} candidate requests)", phase_name, failed, phase.requests),
                     std::move(gates));
  }
  return next_phase(r, shadow, std::move(gates));
}

}  // namespace

RolloutDecision decide(const RolloutRecord& r, const std::optional<EvaluationFigures>& evaluation,
                       const TrafficFigures& phase, double now) {
  if (rollout_ended(r.state)) return {};
  if (r.state == RolloutState::kEvaluating) {
    if (!evaluation) return {};
    std::vector<GateResult> gates = judge_evaluation(r.spec.gates, *evaluation);
    if (const std::string failed = first_failure(gates); !failed.empty()) {
      return roll_back(
          fmt::format("evaluation on {} held-out examples: {} (accuracy {:.4f} -> {:.4f})", evaluation->examples,
                      failed, evaluation->stable_accuracy, evaluation->candidate_accuracy),
          std::move(gates));
    }
    return next_phase(r, false, std::move(gates));
  }
  return decide_live(r, phase, now);
}

RolloutRecord apply(RolloutRecord r, const RolloutDecision& d, double now) {
  switch (d.kind) {
    case RolloutDecision::Kind::kWait:
      return r;
    case RolloutDecision::Kind::kShadow:
      r.state = RolloutState::kShadow;
      break;
    case RolloutDecision::Kind::kCanaryStep:
      r.state = RolloutState::kCanary;
      r.step = d.step;
      break;
    case RolloutDecision::Kind::kPromote:
      r.state = RolloutState::kPromoted;
      r.reason = d.reason;
      break;
    case RolloutDecision::Kind::kRollBack:
      r.state = RolloutState::kRolledBack;
      r.reason = d.reason;
      break;
  }
  r.phase_started_at = now;
  if (!d.gates.empty()) r.gates = d.gates;
  r.history.push_back({now, r.state, r.weight(), d.reason});
  return r;
}

std::string rollout_phase(const RolloutRecord& r) {
  return fmt::format("{:.3f}/{}/{}", r.started_at, to_string(r.state), r.step);
}

int split_bucket(std::string_view key) {
  std::uint64_t hash = 1469598103934665603ULL;  // FNV-1a, 64 bits
  for (unsigned char c : key) {
    hash ^= c;
    hash *= 1099511628211ULL;
  }
  return static_cast<int>(hash % 100);
}

namespace {

json gate_json(const GateResult& g) {
  return {{"gate", g.gate}, {"figure", g.figure}, {"limit", g.limit}, {"at_most", g.at_most}, {"passed", g.passed}};
}

GateResult gate_from_json(const json& j) {
  return {j.at("gate").get<std::string>(), j.at("figure").get<double>(), j.at("limit").get<double>(),
          j.at("at_most").get<bool>(), j.at("passed").get<bool>()};
}

}  // namespace

json to_json(const RolloutRecord& r) {
  json gates = json::array();
  for (const auto& g : r.gates) gates.push_back(gate_json(g));
  json history = json::array();
  for (const auto& e : r.history) {
    history.push_back({{"at", e.at}, {"state", to_string(e.state)}, {"weight", e.weight}, {"reason", e.reason}});
  }
  return {{"name", r.name},
          {"spec", to_json(r.spec)},
          {"stable", {{"model_id", r.stable.model_id}, {"version", r.stable.version}}},
          {"state", to_string(r.state)},
          {"step", r.step},
          {"weight", r.weight()},
          {"started_at", r.started_at},
          {"phase_started_at", r.phase_started_at},
          {"gates", std::move(gates)},
          {"history", std::move(history)},
          {"reason", r.reason}};
}

RolloutRecord rollout_record_from_json(const json& j) {
  try {
    RolloutRecord r;
    r.name = j.at("name").get<std::string>();
    r.spec = parse_rollout_spec(j.at("spec"));
    r.stable = {j.at("stable").at("model_id").get<std::string>(), j.at("stable").at("version").get<int>()};
    const auto state = parse_choice<RolloutState>(j.at("state").get<std::string>());
    if (!state) throw Error(ErrorCode::kDataError, "unknown rollout state");
    r.state = *state;
    r.step = static_cast<int>(checked_int(j.at("step"), -1, 20, "step"));
    r.started_at = j.at("started_at").get<double>();
    r.phase_started_at = j.at("phase_started_at").get<double>();
    for (const auto& g : j.at("gates")) r.gates.push_back(gate_from_json(g));
    for (const auto& e : j.at("history")) {
      const auto s = parse_choice<RolloutState>(e.at("state").get<std::string>());
      r.history.push_back({e.at("at").get<double>(), s.value_or(RolloutState::kEvaluating), e.at("weight").get<int>(),
                           e.at("reason").get<std::string>()});
    }
    r.reason = j.value("reason", "");
    return r;
  } catch (const std::exception& e) {
    throw Error(ErrorCode::kDataError, fmt::format("a rollout record does not read back: {}", e.what()));
  }
}

}  // namespace mlswarm
