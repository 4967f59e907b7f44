#include "mlswarm/job.h"

#include <chrono>
#include <cmath>
#include <limits>
#include <set>

#include <fmt/format.h>

#include "mlswarm/dataset.h"
#include "mlswarm/error.h"
#include "mlswarm/ids.h"
#include "mlswarm/ipv4.h"
#include "mlswarm/json_fields.h"
#include "mlswarm/ports.h"
#include "mlswarm/request_fields.h"

namespace mlswarm {
namespace {

using nlohmann::json;

std::string get_string(const json& object, const char* key, std::string_view field, std::string fallback) {
  auto it = object.find(key);
  if (it == object.end() || it->is_null()) return fallback;
  if (!it->is_string()) invalid_field(field, fmt::format("{} must be a string", field));
  return it->get<std::string>();
}

double get_double(const json& object, const char* key, std::string_view field, double fallback, double lo, double hi,
                  bool lo_inclusive) {
  auto it = object.find(key);
  if (it == object.end() || it->is_null()) return fallback;
  if (!it->is_number()) invalid_field(field, fmt::format("{} must be a number", field));
  double value = it->get<double>();
  bool above = lo_inclusive ? value >= lo : value > lo;
  if (!std::isfinite(value) || !above || value > hi) {
    invalid_field(field, fmt::format("{} must be in {}{}, {}]", field, lo_inclusive ? "[" : "(", lo, hi));
  }
  return value;
}

/// `field` of `object` as one of E's choices (`current` when absent); invalid_field() naming them all
/// ("... must be \"a\", \"b\" or \"c\"") otherwise.
template <typename E>
E get_choice(const json& object, const char* key, const std::string& field, E current) {
  const std::string text = get_string(object, key, field, std::string(to_string(current)));
  if (auto value = parse_choice<E>(text)) return *value;
  std::string names;
  const auto& table = EnumNames<E>::table;
  for (std::size_t i = 0; i < table.size(); ++i) {
    names += fmt::format("{}\"{}\"", i == 0 ? "" : i + 1 == table.size() ? " or " : ", ", table[i].second);
  }
  invalid_field(field, fmt::format("{} must be {}", field, names));
}

TrainOpts parse_train_opts(const json& object) {
  if (!object.is_object()) invalid_field("train_opts", "train_opts must be an object");
  reject_unknown_fields(object,
                        {"epochs", "batch_size", "lr", "optimizer", "momentum", "weight_decay", "lr_schedule", "seed",
                         "device", "checkpoint_every_steps", "patience", "publish", "augment", "label_smoothing"},
                        "train_opts.");
  TrainOpts opts;
  opts.epochs = static_cast<int>(get_int(object, "epochs", "train_opts.epochs", opts.epochs, 1, 1000));
  opts.batch_size = static_cast<int>(get_int(object, "batch_size", "train_opts.batch_size", opts.batch_size, 1, 65536));
  opts.optimizer = get_choice(object, "optimizer", "train_opts.optimizer", opts.optimizer);
  double default_lr = opts.optimizer == Optimizer::kSgd ? opts.lr : 1e-3;
  opts.lr = get_double(object, "lr", "train_opts.lr", default_lr, 0.0, 10.0, false);
  opts.momentum = get_double(object, "momentum", "train_opts.momentum", opts.momentum, 0.0, 0.999, true);
  opts.weight_decay = get_double(object, "weight_decay", "train_opts.weight_decay", opts.weight_decay, 0.0, 1.0, true);
  opts.lr_schedule = get_choice(object, "lr_schedule", "train_opts.lr_schedule", opts.lr_schedule);
  opts.seed = static_cast<std::uint64_t>(
      get_int(object, "seed", "train_opts.seed", static_cast<std::int64_t>(opts.seed), 0, std::int64_t{1} << 53));
  opts.device = get_choice(object, "device", "train_opts.device", opts.device);
  opts.checkpoint_every_steps = static_cast<int>(
      get_int(object, "checkpoint_every_steps", "train_opts.checkpoint_every_steps", 0, 0, 1000000000));
  opts.patience = static_cast<int>(get_int(object, "patience", "train_opts.patience", 0, 0, 1000));
  opts.publish = get_choice(object, "publish", "train_opts.publish", opts.publish);
  opts.augment = get_choice(object, "augment", "train_opts.augment", opts.augment);
  opts.label_smoothing =
      get_double(object, "label_smoothing", "train_opts.label_smoothing", opts.label_smoothing, 0.0, 0.5, true);
  return opts;
}

Placement parse_placement(const json& object) {
  if (!object.is_object()) invalid_field("placement", "placement must be an object");
  reject_unknown_fields(object, {"rank", "world_size", "hosts", "port"}, "placement.");
  Placement p;
  p.world_size = static_cast<int>(get_int(object, "world_size", "placement.world_size", 1, 1, kMaxWorldSize));
  p.rank = static_cast<int>(get_int(object, "rank", "placement.rank", 0, 0, p.world_size - 1));
  p.port = static_cast<int>(get_int(object, "port", "placement.port", kDefaultRendezvousPort, 1, 65535));
  const auto hosts = object.find("hosts");
  if (hosts == object.end() || !hosts->is_array() || static_cast<int>(hosts->size()) != p.world_size) {
    invalid_field("placement.hosts", "placement.hosts must list one IPv4 address per rank");
  }
  for (const auto& h : *hosts) {
    std::uint32_t address = 0;
    if (!h.is_string() || !parse_ipv4(h.get<std::string>(), address)) {
      invalid_field("placement.hosts", "placement.hosts must list one IPv4 address per rank");
    }
    p.hosts.push_back(h.get<std::string>());
  }
  return p;
}

/// An optional `[start, end]` range of a split of `size` examples.
std::optional<std::pair<std::int64_t, std::int64_t>> parse_range(const json& body, const char* field, std::int64_t size,
                                                                 const std::string& split) {
  auto it = body.find(field);
  if (it == body.end() || it->is_null()) return std::nullopt;
  if (!it->is_array() || it->size() != 2 || !(*it)[0].is_number_integer() || !(*it)[1].is_number_integer()) {
    invalid_field(field, fmt::format("{} must be [start, end], two integers", field));
  }
  auto start = (*it)[0].get<std::int64_t>();
  auto end = (*it)[1].get<std::int64_t>();
  if (start < 0 || end <= start || end > size) {
    invalid_field(field, fmt::format("{} must satisfy 0 <= start < end <= {} ({})", field, size, split));
  }
  return std::make_pair(start, end);
}

/// stop_after_epoch, resume_from, sweep_id and trial.
void parse_sweep_fields(const json& body, JobSpec& spec) {
  spec.stop_after_epoch =
      static_cast<int>(get_int(body, "stop_after_epoch", "stop_after_epoch", 0, 0, spec.train_opts.epochs));
  spec.resume_from = get_string(body, "resume_from", "resume_from", "");
  if (!spec.resume_from.empty()) {
    require_valid_id(spec.resume_from, "resume_from");
    if (spec.resume_from == spec.job_id) invalid_field("resume_from", "a job cannot resume from itself");
  }
  spec.sweep_id = get_string(body, "sweep_id", "sweep_id", "");
  if (!spec.sweep_id.empty()) require_valid_id(spec.sweep_id, "sweep_id");
  spec.trial = static_cast<int>(get_int(body, "trial", "trial", 0, 0, 1 << 20));
  if (body.contains("deploy") && !body["deploy"].is_null()) {
    const json& deploy = body["deploy"];
    if (!deploy.is_object() || !deploy.contains("name") || !deploy["name"].is_string()) {
      invalid_field("deploy.name", "deploy must be an object with the served name to roll the model out onto");
    }
    require_valid_id(deploy["name"].get<std::string>(), "deploy.name");
    spec.deploy = deploy;
  }
}

}  // namespace

JobSpec parse_job_spec(const json& body) {
  if (!body.is_object()) invalid_field("", "the job spec must be a JSON object");
  reject_unknown_fields(
      body,
      {"job_id", "model_id", "model_type", "dataset", "example_idxs", "test_idxs", "train_opts", "attempt", "trainers",
       "min_trainers", "placement", "stop_after_epoch", "resume_from", "sweep_id", "trial", "deploy"},
      "");
  JobSpec spec;
  spec.job_id = get_string(body, "job_id", "job_id", "");
  if (!spec.job_id.empty()) require_valid_id(spec.job_id, "job_id");
  spec.model_id = get_string(body, "model_id", "model_id", "");
  if (spec.model_id.empty() && body.contains("model_id") && !body["model_id"].is_null()) {
    invalid_field("model_id", "model_id must not be empty");
  }
  if (!spec.model_id.empty()) require_valid_id(spec.model_id, "model_id");

  const std::string model_type = get_string(body, "model_type", "model_type", std::string(to_string(spec.model_type)));
  const auto parsed_type = parse_choice<ModelType>(model_type);
  if (!parsed_type)
    invalid_field("model_type", fmt::format("unknown model_type '{}'; known: convnet, resnet, mlp", model_type));
  spec.model_type = *parsed_type;
  spec.dataset = get_string(body, "dataset", "dataset", spec.dataset);
  // A built-in dataset's ranges are checked against its splits here; a folder dataset (any other
  // valid name: whether it is registered is checked where HOME_DIR is known, see
  // require_dataset) has its ranges clipped to its splits when it is loaded.
  const DatasetInfo* info = find_dataset_info(spec.dataset);
  if (info == nullptr) require_valid_id(spec.dataset, "dataset");
  constexpr std::int64_t kAnySize = std::int64_t{1} << 40;
  spec.example_idxs = parse_range(body, "example_idxs", info != nullptr ? info->train_size : kAnySize,
                                  fmt::format("{} train split", spec.dataset));
  spec.test_idxs = parse_range(body, "test_idxs", info != nullptr ? info->test_size : kAnySize,
                               fmt::format("{} test split", spec.dataset));
  if (auto it = body.find("train_opts"); it != body.end() && !it->is_null()) {
    spec.train_opts = parse_train_opts(*it);
  }
  spec.attempt = static_cast<int>(get_int(body, "attempt", "attempt", 1, 0, kMaxAttempt));
  spec.trainers = static_cast<int>(get_int(body, "trainers", "trainers", 1, 1, kMaxWorldSize));
  spec.min_trainers = static_cast<int>(get_int(body, "min_trainers", "min_trainers", spec.trainers, 1, spec.trainers));
  if (auto it = body.find("placement"); it != body.end() && !it->is_null()) spec.placement = parse_placement(*it);
  parse_sweep_fields(body, spec);
  return spec;
}

json to_json(const JobSpec& spec) {
  const TrainOpts& o = spec.train_opts;
  json out = {{"model_id", spec.model_id},
              {"model_type", to_string(spec.model_type)},
              {"dataset", spec.dataset},
              {"train_opts",
               {{"epochs", o.epochs},
                {"batch_size", o.batch_size},
                {"lr", o.lr},
                {"optimizer", to_string(o.optimizer)},
                {"momentum", o.momentum},
                {"weight_decay", o.weight_decay},
                {"lr_schedule", to_string(o.lr_schedule)},
                {"seed", o.seed},
                {"device", to_string(o.device)},
                {"checkpoint_every_steps", o.checkpoint_every_steps},
                // Always written: its default changed (0 -> 0.1), so a spec without it is one
                // from before, whose checkpoint does not resume under the new default.
                {"label_smoothing", o.label_smoothing}}}};
  // Only when set: specs (and checkpoints' resume keys) from before these options stay equal.
  if (o.patience != 0) out["train_opts"]["patience"] = o.patience;
  if (o.publish != Publish::kLast) out["train_opts"]["publish"] = to_string(o.publish);
  if (o.augment != Augment::kNone) out["train_opts"]["augment"] = to_string(o.augment);
  if (!spec.job_id.empty()) out["job_id"] = spec.job_id;
  if (spec.example_idxs) out["example_idxs"] = {spec.example_idxs->first, spec.example_idxs->second};
  if (spec.test_idxs) out["test_idxs"] = {spec.test_idxs->first, spec.test_idxs->second};
  out["trainers"] = spec.trainers;
  out["min_trainers"] = spec.min_trainers;
  if (spec.placement) {
    const Placement& p = *spec.placement;
    out["placement"] = {{"rank", p.rank}, {"world_size", p.world_size}, {"hosts", p.hosts}, {"port", p.port}};
  }
  if (spec.stop_after_epoch != 0) out["stop_after_epoch"] = spec.stop_after_epoch;
  if (!spec.resume_from.empty()) out["resume_from"] = spec.resume_from;
  if (!spec.sweep_id.empty()) {
    out["sweep_id"] = spec.sweep_id;
    out["trial"] = spec.trial;
  }
  if (!spec.deploy.is_null()) out["deploy"] = spec.deploy;
  return out;
}

std::string_view to_string(JobState state) noexcept {
  switch (state) {
    case JobState::kQueued:
      return "queued";
    case JobState::kRunning:
      return "running";
    case JobState::kSucceeded:
      return "succeeded";
    case JobState::kFailed:
      return "failed";
    case JobState::kCancelled:
      return "cancelled";
  }
  return "failed";
}

std::string_view to_string(FailureCode code) noexcept {
  switch (code) {
    case FailureCode::kNone:
      return "";
    case FailureCode::kInterrupted:
      return "interrupted";
    case FailureCode::kLostPeer:
      return "lost_peer";
    case FailureCode::kSuperseded:
      return "superseded";
    case FailureCode::kLostTrainer:
      return "lost_trainer";
    case FailureCode::kNoSpace:
      return "no_space";
    case FailureCode::kInvalidSpec:
      return "invalid_spec";
    case FailureCode::kDataError:
      return "data_error";
    case FailureCode::kOutOfMemory:
      return "out_of_memory";
    case FailureCode::kInternal:
      return "internal";
  }
  return "internal";
}

FailureCode parse_failure_code(std::string_view text) noexcept {
  for (FailureCode c : {FailureCode::kInterrupted, FailureCode::kLostPeer, FailureCode::kSuperseded,
                        FailureCode::kLostTrainer, FailureCode::kNoSpace, FailureCode::kInvalidSpec,
                        FailureCode::kDataError, FailureCode::kOutOfMemory, FailureCode::kInternal}) {
    if (to_string(c) == text) return c;
  }
  return FailureCode::kNone;
}

FailureCode failure_for(ErrorCode code) noexcept {
  switch (code) {
    case ErrorCode::kSuperseded:
      return FailureCode::kSuperseded;
    case ErrorCode::kDataError:
      return FailureCode::kDataError;
    case ErrorCode::kInvalidArgument:
      return FailureCode::kInvalidSpec;
    case ErrorCode::kOutOfMemory:
      return FailureCode::kOutOfMemory;
    case ErrorCode::kLostPeer:
      return FailureCode::kLostPeer;
    case ErrorCode::kNoSpace:
      return FailureCode::kNoSpace;
    default:
      return FailureCode::kInternal;
  }
}

std::optional<JobState> parse_job_state(std::string_view text) noexcept {
  for (JobState s :
       {JobState::kQueued, JobState::kRunning, JobState::kSucceeded, JobState::kFailed, JobState::kCancelled}) {
    if (to_string(s) == text) return s;
  }
  return std::nullopt;
}

void JobProgress::update(const JobProgress& newer) {
  const std::optional<double> known_loss = loss;
  const std::optional<double> known_accuracy = accuracy;
  const std::string known_device = device;
  *this = newer;
  if (!loss) loss = known_loss;
  if (!accuracy) accuracy = known_accuracy;
  if (device.empty()) device = known_device;
}

json to_json(const JobRecord& job, double now) {
  double end = job.finished_at > 0 ? job.finished_at : now;
  double duration = job.started_at > 0 ? std::max(0.0, end - job.started_at) : 0.0;
  json eta = nullptr;
  const JobProgress& p = job.progress;
  if (job.state == JobState::kRunning && p.fraction > 0.001) {
    eta = duration * (1.0 - p.fraction) / p.fraction;
  } else if (is_terminal(job.state)) {
    eta = 0.0;
  }
  auto opt = [](const std::optional<double>& v) -> json { return v ? json(*v) : json(nullptr); };
  return {{"job_id", job.spec.job_id},
          {"model_id", job.spec.model_id},
          {"state", to_string(job.state)},
          {"epoch", p.epoch},
          {"epochs", job.spec.train_opts.epochs},
          {"step", p.step},
          {"steps_per_epoch", p.steps_per_epoch},
          {"progress", p.fraction},
          {"loss", opt(p.loss)},
          {"accuracy", opt(p.accuracy)},
          {"images_per_s", p.images_per_s},
          {"duration_s", duration},
          {"eta_s", eta},
          {"trainer", job.trainer},
          {"trainers", job.trainers},
          {"rank", job.rank},
          {"world_size", job.world_size},
          {"attempts", job.spec.attempt},
          {"device", p.device},
          {"request_id", job.request_id.empty() ? json(nullptr) : json(job.request_id)},
          {"error", job.error.empty() ? json(nullptr) : json(job.error)},
          {"failure", job.failure == FailureCode::kNone ? json(nullptr) : json(to_string(job.failure))},
          {"lost_attempts", job.lost_attempts},
          {"rendezvous_port", job.rendezvous_port},
          {"spec", to_json(job.spec)},
          {"created_at", job.created_at},
          {"started_at", job.started_at > 0 ? json(job.started_at) : json(nullptr)},
          {"finished_at", job.finished_at > 0 ? json(job.finished_at) : json(nullptr)},
          {"updated_at", job.updated_at}};
}

JobRecord job_record_from_json(const json& j) {
  try {
    JobRecord job;
    json spec = j.at("spec");
    constexpr std::int64_t kIntMax = std::numeric_limits<int>::max();
    spec["attempt"] = checked_int_or(j, "attempts", 1, 0, kMaxAttempt);
    job.spec = parse_job_spec(spec);
    auto state = parse_job_state(j.at("state").get<std::string>());
    if (!state) throw Error(ErrorCode::kDataError, "job: unknown state");
    job.state = *state;
    JobProgress& p = job.progress;
    p.epoch = static_cast<int>(checked_int_or(j, "epoch", 0, 0, kIntMax));
    p.step = static_cast<int>(checked_int_or(j, "step", 0, 0, kIntMax));
    p.steps_per_epoch = static_cast<int>(checked_int_or(j, "steps_per_epoch", 0, 0, kIntMax));
    p.fraction = j.value("progress", 0.0);
    if (j.contains("loss") && j["loss"].is_number()) p.loss = j["loss"].get<double>();
    if (j.contains("accuracy") && j["accuracy"].is_number()) p.accuracy = j["accuracy"].get<double>();
    p.images_per_s = j.value("images_per_s", 0.0);
    job.trainer = j.value("trainer", "");
    if (const auto t = j.find("trainers"); t != j.end() && t->is_array() && t->size() <= kMaxWorldSize) {
      for (const auto& address : *t) job.trainers.push_back(address.get<std::string>());
    }
    job.world_size = static_cast<int>(checked_int_or(j, "world_size", 1, 1, kMaxWorldSize));
    job.rank = static_cast<int>(checked_int_or(j, "rank", 0, 0, job.world_size - 1));
    job.rendezvous_port = static_cast<int>(checked_int_or(j, "rendezvous_port", 0, 0, 65535));
    if (j.contains("error") && j["error"].is_string()) job.error = j["error"].get<std::string>();
    if (j.contains("failure") && j["failure"].is_string())
      job.failure = parse_failure_code(j["failure"].get<std::string>());
    job.lost_attempts = static_cast<int>(checked_int_or(j, "lost_attempts", 0, 0, kMaxAttempt));
    p.device = j.value("device", "");
    if (j.contains("request_id") && j["request_id"].is_string()) job.request_id = j["request_id"].get<std::string>();
    job.created_at = j.value("created_at", 0.0);
    if (j.contains("started_at") && j["started_at"].is_number()) job.started_at = j["started_at"].get<double>();
    if (j.contains("finished_at") && j["finished_at"].is_number()) job.finished_at = j["finished_at"].get<double>();
    job.updated_at = j.value("updated_at", 0.0);
    return job;
  } catch (const json::exception& e) {
    throw Error(ErrorCode::kDataError, fmt::format("job record: {}", e.what()));
  } catch (const Error& e) {
    throw Error(ErrorCode::kDataError, fmt::format("job record: {}", e.what()));
  }
}

double unix_now() {
  using namespace std::chrono;
  return duration<double>(system_clock::now().time_since_epoch()).count();
}

}  // namespace mlswarm
