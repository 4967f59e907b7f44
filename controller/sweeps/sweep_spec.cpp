#include "sweep_spec.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <optional>
#include <set>

#include <fmt/format.h>

#include "mlswarm/error.h"
#include "mlswarm/ids.h"
#include "mlswarm/json_fields.h"
#include "mlswarm/request_fields.h"

namespace mlswarm {
namespace {

using nlohmann::json;

/// The most values one choice may list: a sweep draws from them, it does not enumerate them.
constexpr std::size_t kMaxChoiceValues = 100;
constexpr int kMaxEpochs = 1000;  // as train_opts.epochs

const json& require_object(const json& value, std::string_view field) {
  if (!value.is_object()) invalid_field(field, fmt::format("{} must be an object", field));
  return value;
}

/// A choice of E named by object[key], which must be there.
template <typename E>
E get_choice(const json& object, const char* key, std::string_view field) {
  const auto it = object.find(key);
  std::vector<std::string_view> names;
  for (const auto& [value, name] : EnumNames<E>::table) names.push_back(name);
  if (it != object.end() && it->is_string()) {
    if (auto value = parse_choice<E>(it->get<std::string>())) return *value;
  }
  invalid_field(field, fmt::format("{} must be one of \"{}\"", field, fmt::join(names, "\", \"")));
}

/// Seeds are uint64, beyond what json_integer reads; JSON's parser keeps them exact as unsigned.
std::uint64_t get_seed(const json& body) {
  const auto it = body.find("seed");
  if (it == body.end() || it->is_null()) return 0;
  if (it->is_number_unsigned()) return it->get<std::uint64_t>();
  const auto value = json_integer(*it);
  if (!value || *value < 0) invalid_field("seed", "seed must be an integer between 0 and 2^64 - 1");
  return static_cast<std::uint64_t>(*value);
}

// --- What may be searched -----------------------------------------------------------------

enum class FieldKind { kReal, kInteger, kEnum };

struct Searchable {
  std::string_view name;
  FieldKind kind;
};

/// train_opts' seed is not here: trials share it, so that they differ only in what is searched.
/// Nor are patience and checkpoint_every_steps: they are not hyper-parameters.
constexpr std::array<Searchable, 9> kSearchable{{{"lr", FieldKind::kReal},
                                                 {"momentum", FieldKind::kReal},
                                                 {"weight_decay", FieldKind::kReal},
                                                 {"label_smoothing", FieldKind::kReal},
                                                 {"batch_size", FieldKind::kInteger},
                                                 {"optimizer", FieldKind::kEnum},
                                                 {"lr_schedule", FieldKind::kEnum},
                                                 {"augment", FieldKind::kEnum},
                                                 {"model_type", FieldKind::kEnum}}};

FieldKind searchable_kind(const std::string& name, std::string_view field) {
  for (const auto& s : kSearchable) {
    if (s.name == name) return s.kind;
  }
  if (name == "epochs")
    invalid_field(field, fmt::format("{}: epochs is not searchable, the scheduler sets them", field));
  std::vector<std::string_view> names;
  for (const auto& s : kSearchable) names.push_back(s.name);
  invalid_field(field, fmt::format("{}: '{}' is not searchable; searchable: {}", field, name, fmt::join(names, ", ")));
}

void check_type_fits(ParamType type, FieldKind kind, const std::string& name, std::string_view field) {
  if (type == ParamType::kChoice) return;
  if (kind == FieldKind::kEnum) invalid_field(field, fmt::format("{}: {} takes \"choice\" only", field, name));
  if (kind == FieldKind::kInteger && type != ParamType::kInt) {
    invalid_field(field, fmt::format("{}: {} is an integer: use \"int\" or \"choice\"", field, name));
  }
  if (kind == FieldKind::kReal && type == ParamType::kInt) {
    invalid_field(field, fmt::format("{}: {} is a real: use \"uniform\", \"log_uniform\" or \"choice\"", field, name));
  }
}

// --- Parsing one searched field -------------------------------------------------------------

void parse_values(const json& object, ParamSpace& param, const std::string& prefix) {
  reject_unknown_fields(object, {"type", "values"}, prefix + ".");
  const std::string field = prefix + ".values";
  const auto it = object.find("values");
  if (it == object.end() || !it->is_array() || it->empty() || it->size() > kMaxChoiceValues) {
    invalid_field(field, fmt::format("{} must be an array of 1 to {} values", field, kMaxChoiceValues));
  }
  for (const json& value : *it) {
    if (std::find(param.values.begin(), param.values.end(), value) != param.values.end()) {
      invalid_field(field, fmt::format("{} lists {} twice", field, value.dump()));
    }
    param.values.push_back(value);
  }
}

double get_bound(const json& object, const char* key, const std::string& field, bool integral) {
  const auto it = object.find(key);
  if (it == object.end() || !it->is_number()) invalid_field(field, fmt::format("{} must be a number", field));
  if (integral) {
    const auto value = json_integer(*it);
    if (!value) invalid_field(field, fmt::format("{} must be an integer", field));
    return static_cast<double>(*value);
  }
  const double value = it->get<double>();
  if (!std::isfinite(value)) invalid_field(field, fmt::format("{} must be finite", field));
  return value;
}

void parse_range(const json& object, ParamSpace& param, const std::string& prefix) {
  reject_unknown_fields(object, {"type", "min", "max"}, prefix + ".");
  const bool integral = param.type == ParamType::kInt;
  param.min = get_bound(object, "min", prefix + ".min", integral);
  param.max = get_bound(object, "max", prefix + ".max", integral);
  if (param.type == ParamType::kLogUniform && param.min <= 0) {
    invalid_field(prefix + ".min", fmt::format("{}.min must be above 0 for log_uniform", prefix));
  }
  if (integral ? param.max < param.min : param.max <= param.min) {
    invalid_field(prefix + ".max",
                  fmt::format("{}.max must be {} {}.min", prefix, integral ? "at least" : "above", prefix));
  }
}

/// Checks `body` as a job spec; an error names `field` (of the sweep) and keeps the job's reason.
void check_job_as(const json& body, const std::string& field) {
  try {
    parse_job_spec(body);
  } catch (const Error& e) {
    if (e.code() != ErrorCode::kInvalidArgument) throw;
    invalid_field(field, fmt::format("{}: {}", field, e.what()));
  }
}

/// Every value the field can take, checked on the base as POST /train would check it: the
/// choices, or the two ends of the range (the job spec's limits are intervals).
void check_against_base(const ParamSpace& param, const json& base, const std::string& prefix) {
  auto check = [&](const json& value, const std::string& field) {
    check_job_as(with_params(base, json{{param.name, value}}), field);
  };
  if (param.type == ParamType::kChoice) {
    for (const json& value : param.values) check(value, prefix + ".values");
  } else if (param.type == ParamType::kInt) {
    check(static_cast<std::int64_t>(param.min), prefix + ".min");
    check(static_cast<std::int64_t>(param.max), prefix + ".max");
  } else {
    check(param.min, prefix + ".min");
    check(param.max, prefix + ".max");
  }
}

ParamSpace parse_param(const std::string& name, const json& object, const json& base) {
  const std::string prefix = "space." + name;
  const FieldKind kind = searchable_kind(name, prefix);
  require_object(object, prefix);
  ParamSpace param;
  param.name = name;
  param.type = get_choice<ParamType>(object, "type", prefix + ".type");
  check_type_fits(param.type, kind, name, prefix + ".type");
  if (param.type == ParamType::kChoice) {
    parse_values(object, param, prefix);
  } else {
    parse_range(object, param, prefix);
  }
  check_against_base(param, base, prefix);
  return param;
}

// --- The sweep's other parts ------------------------------------------------------------------

void parse_scheduler(const json& body, SweepSpec& spec) {
  const auto it = body.find("scheduler");
  if (it == body.end()) invalid_field("scheduler", "scheduler is required");
  const json& object = require_object(*it, "scheduler");
  spec.scheduler = get_choice<SchedulerType>(object, "type", "scheduler.type");
  if (spec.scheduler == SchedulerType::kRandom) {
    reject_unknown_fields(object, {"type", "epochs"}, "scheduler.");
    const int epochs = static_cast<int>(get_int(object, "epochs", "scheduler.epochs", std::nullopt, 1, kMaxEpochs));
    spec.asha = {.min_epochs = epochs, .eta = AshaConfig{}.eta, .max_epochs = epochs};
    return;
  }
  reject_unknown_fields(object, {"type", "r", "eta", "R"}, "scheduler.");
  AshaConfig& a = spec.asha;
  a.max_epochs = static_cast<int>(get_int(object, "R", "scheduler.R", std::nullopt, 1, kMaxEpochs));
  a.min_epochs = static_cast<int>(get_int(object, "r", "scheduler.r", 1, 1, a.max_epochs));
  a.eta = static_cast<int>(get_int(object, "eta", "scheduler.eta", AshaConfig{}.eta, 2, kMaxEpochs));
  // Each rung promotes a 1/eta of the one below, so the last is sure to be reached only from
  // eta^(rungs - 1) trials on; with fewer, R would be a promise the sweep cannot keep.
  const auto rungs = rung_epochs(a);
  std::int64_t needed = 1;  // eta^(rungs - 1) = eta * eta^(rungs - 2) < eta * R <= 10^6
  for (std::size_t k = 1; k < rungs.size(); ++k) needed *= a.eta;
  if (needed > spec.trials) {
    invalid_field("trials", fmt::format("trials ({}) must be at least eta^{} = {} for a trial to reach the last rung "
                                        "(rungs of {} epochs)",
                                        spec.trials, rungs.size() - 1, needed, fmt::join(rungs, ", ")));
  }
}

/// The base minus what the sweep owns, then checked as a job spec.
void check_base(const json& base, SchedulerType scheduler) {
  require_object(base, "base");
  for (const char* key : {"job_id", "model_id"}) {
    if (base.contains(key))
      invalid_field(fmt::format("base.{}", key), fmt::format("base.{}: each trial's is <sweep_id>-t<trial>", key));
  }
  for (const char* key : {"attempt", "placement"}) {
    if (base.contains(key))
      invalid_field(fmt::format("base.{}", key), fmt::format("base.{}: the controller sets it", key));
  }
  if (base.contains("deploy")) {
    invalid_field("base.deploy", "base.deploy: a trial is never rolled out; give the sweep a deploy instead");
  }
  const json opts = base.value("train_opts", json::object());
  if (opts.is_object() && opts.contains("epochs")) {
    invalid_field("base.train_opts.epochs", "base.train_opts.epochs: the scheduler sets each trial's epochs");
  }
  if (opts.is_object() && opts.contains("patience") && scheduler == SchedulerType::kAsha) {
    invalid_field("base.train_opts.patience",
                  "base.train_opts.patience: early stopping would end a trial before its rung");
  }
  try {
    parse_job_spec(base);
  } catch (const Error& e) {
    if (e.code() != ErrorCode::kInvalidArgument) throw;
    const std::string field = e.field().empty() ? "base" : "base." + e.field();
    invalid_field(field, fmt::format("base: {}", e.what()));
  }
}

std::vector<ParamSpace> parse_space(const json& body, const json& base) {
  const auto it = body.find("space");
  if (it == body.end() || !it->is_object() || it->empty()) {
    invalid_field("space", "space must be an object naming at least one field to search");
  }
  std::vector<ParamSpace> space;
  // nlohmann's objects iterate by key, so the space comes out sorted by name.
  for (const auto& [name, value] : it->items()) space.push_back(parse_param(name, value, base));
  return space;
}

json to_json(const ParamSpace& param) {
  json out = {{"type", to_string(param.type)}};
  if (param.type == ParamType::kChoice) {
    out["values"] = param.values;
  } else if (param.type == ParamType::kInt) {
    out["min"] = static_cast<std::int64_t>(param.min);
    out["max"] = static_cast<std::int64_t>(param.max);
  } else {
    out["min"] = param.min;
    out["max"] = param.max;
  }
  return out;
}

}  // namespace

SweepSpec parse_sweep_spec(const json& body) {
  if (!body.is_object()) invalid_field("", "the sweep must be a JSON object");
  reject_unknown_fields(body, {"sweep_id", "trials", "seed", "base", "space", "scheduler", "parallel", "deploy"}, "");
  SweepSpec spec;
  const auto id = body.find("sweep_id");
  if (id == body.end() || !id->is_string()) invalid_field("sweep_id", "sweep_id must be a string");
  spec.sweep_id = id->get<std::string>();
  require_valid_id(spec.sweep_id, "sweep_id");
  spec.trials = static_cast<int>(get_int(body, "trials", "trials", std::nullopt, 1, kMaxSweepTrials));
  spec.parallel = static_cast<int>(get_int(body, "parallel", "parallel", 0, 0, kMaxSweepTrials));
  spec.seed = get_seed(body);
  parse_scheduler(body, spec);
  const auto rungs = static_cast<int>(rung_epochs(spec.asha).size());
  const std::string last_id = rung_job_id(spec.sweep_id, spec.trials - 1, rungs - 1);
  if (!is_valid_id(last_id)) {
    invalid_field("sweep_id",
                  fmt::format("sweep_id is too long: trial job ids such as {} must be at most 64 characters", last_id));
  }
  if (const auto base = body.find("base"); base != body.end()) spec.base = *base;
  check_base(spec.base, spec.scheduler);
  spec.space = parse_space(body, spec.base);
  if (body.contains("deploy") && !body["deploy"].is_null()) {
    const json& deploy = body["deploy"];
    if (!deploy.is_object() || !deploy.contains("name") || !deploy["name"].is_string()) {
      invalid_field("deploy.name", "deploy must be an object with the served name to roll the best model out onto");
    }
    require_valid_id(deploy["name"].get<std::string>(), "deploy.name");
    spec.deploy = deploy;
  }
  return spec;
}

json to_json(const SweepSpec& spec) {
  json space = json::object();
  for (const ParamSpace& param : spec.space) space[param.name] = to_json(param);
  json scheduler = {{"type", to_string(spec.scheduler)}};
  if (spec.scheduler == SchedulerType::kRandom) {
    scheduler["epochs"] = spec.asha.max_epochs;
  } else {
    scheduler.update({{"r", spec.asha.min_epochs}, {"eta", spec.asha.eta}, {"R", spec.asha.max_epochs}});
  }
  json out = {{"sweep_id", spec.sweep_id}, {"trials", spec.trials}, {"seed", spec.seed},
              {"base", spec.base},         {"space", space},        {"scheduler", scheduler}};
  if (spec.parallel != 0) out["parallel"] = spec.parallel;
  if (!spec.deploy.is_null()) out["deploy"] = spec.deploy;
  return out;
}

std::string trial_id(std::string_view sweep_id, int trial) { return fmt::format("{}-t{}", sweep_id, trial); }

std::string rung_job_id(std::string_view sweep_id, int trial, int rung) {
  return rung == 0 ? trial_id(sweep_id, trial) : fmt::format("{}-t{}-r{}", sweep_id, trial, rung);
}

namespace {

/// The decimal number at the front of `text` (no sign, no leading zero), and how many
/// characters it took; nullopt when there is none.
std::optional<std::pair<long, std::size_t>> leading_number(std::string_view text) {
  std::size_t n = 0;
  long value = 0;
  while (n < text.size() && n < 9 && text[n] >= '0' && text[n] <= '9') value = value * 10 + (text[n++] - '0');
  if (n == 0 || (n > 1 && text[0] == '0')) return std::nullopt;
  return std::make_pair(value, n);
}

}  // namespace

bool sweep_claims(const SweepSpec& spec, std::string_view id) {
  const std::string_view sweep = spec.sweep_id;
  if (id == sweep) return true;
  if (id.size() < sweep.size() + 3 || id.substr(0, sweep.size()) != sweep || id.substr(sweep.size(), 2) != "-t") {
    return false;
  }
  std::string_view rest = id.substr(sweep.size() + 2);
  const auto trial = leading_number(rest);
  if (!trial || trial->first >= spec.trials) return false;
  rest.remove_prefix(trial->second);
  if (rest.empty()) return true;  // a trial: its model and its rung-0 job
  if (rest.substr(0, 2) != "-r") return false;
  rest.remove_prefix(2);
  const auto rung = leading_number(rest);
  return rung && rung->first >= 1 && rung->second == rest.size();
}

json with_params(json base, const json& params) {
  for (const auto& [name, value] : params.items()) {
    if (name == "model_type") {
      base[name] = value;
    } else {
      base["train_opts"][name] = value;
    }
  }
  return base;
}

}  // namespace mlswarm
