// The checkpoint payload: what it holds and how a resume reads it back.

#include "training_parts.h"

#include <algorithm>
#include <cmath>
#include <sstream>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "mlswarm/error.h"
#include "mlswarm/json_fields.h"
#include "mlswarm/torch/model_zoo.h"

namespace mlswarm {

using nlohmann::json;

json resume_key(const JobSpec& spec) {
  json key = to_json(spec);
  key.erase("job_id");
  key["train_opts"].erase("device");
  key["train_opts"].erase("checkpoint_every_steps");
  // The global batch makes a run independent of how many trainers share it, so a job resumes
  // on however many are free.
  key.erase("trainers");
  key.erase("min_trainers");
  key.erase("placement");
  // A sweep's promoted trial is a new job that carries on from its last rung's checkpoint: how
  // far a job goes and where it came from are not part of what it trains.
  key.erase("stop_after_epoch");
  key.erase("resume_from");
  key.erase("sweep_id");
  key.erase("trial");
  key.erase("deploy");  // what happens to the model afterwards is not part of what it trains
  return key;
}

std::string encode_checkpoint(torch::nn::Sequential& model, torch::optim::Optimizer& optimizer, const JobSpec& spec,
                              const ResumePoint& point, const std::string& dataset_hash) {
  torch::serialize::OutputArchive archive;
  torch::serialize::OutputArchive model_archive;
  model->save(model_archive);
  archive.write("model", model_archive);
  torch::serialize::OutputArchive optimizer_archive;
  optimizer.save(optimizer_archive);
  archive.write("optimizer", optimizer_archive);
  json history = json::array();
  for (const auto& e : point.history) {
    history.push_back({e.epoch, e.train_loss, e.test_loss, e.accuracy, e.images_per_s, e.duration_s});
  }
  json state = {{"job_id", spec.job_id},        {"attempt", spec.attempt}, {"next_epoch", point.next_epoch},
                {"next_step", point.next_step}, {"history", history},      {"resume_key", resume_key(spec)}};
  if (!dataset_hash.empty()) state["dataset_hash"] = dataset_hash;
  if (point.unevaluated) {
    const EpochMetrics& e = *point.unevaluated;
    state["unevaluated"] = {e.epoch, e.train_loss, e.images_per_s, e.duration_s};
  }
  archive.write("state", c10::IValue(state.dump()));
  std::ostringstream out;
  archive.save_to(out);
  return std::move(out).str();
}

std::optional<ResumePoint> decode_checkpoint(const std::string& payload, const std::string& what, const JobSpec& spec,
                                             torch::nn::Sequential& model, torch::optim::Optimizer& optimizer,
                                             torch::Device device, const std::string& dataset_hash) {
  std::istringstream in(payload);
  torch::serialize::InputArchive archive;
  archive.load_from(in, device);
  c10::IValue state_value;
  archive.read("state", state_value);
  json state = json::parse(state_value.toStringRef());
  if (state.at("resume_key") != resume_key(spec)) {
    spdlog::warn("job {}: checkpoint {} is for a different spec; starting from scratch", spec.job_id, what);
    return std::nullopt;
  }
  if (state.value("dataset_hash", std::string()) != dataset_hash) {
    spdlog::warn(
        "job {}: checkpoint {} was trained on dataset {} as registered before (content {}, now {}); starting "
        "from scratch",
        spec.job_id, what, spec.dataset, state.value("dataset_hash", std::string()), dataset_hash);
    return std::nullopt;
  }
  torch::serialize::InputArchive model_archive;
  archive.read("model", model_archive);
  model->load(model_archive);
  torch::serialize::InputArchive optimizer_archive;
  archive.read("optimizer", optimizer_archive);
  optimizer.load(optimizer_archive);
  ResumePoint point;
  point.next_epoch = static_cast<int>(checked_int(state.at("next_epoch"), 1, spec.train_opts.epochs + 1, "next_epoch"));
  point.next_step = static_cast<int>(checked_int(state.at("next_step"), 0, 1 << 30, "next_step"));
  for (const auto& e : state.at("history")) {
    point.history.push_back({static_cast<int>(checked_int(e.at(0), 1, spec.train_opts.epochs, "history epoch")),
                             e.at(1).get<double>(), e.at(2).get<double>(), e.at(3).get<double>(), e.at(4).get<double>(),
                             e.at(5).get<double>()});
  }
  if (state.contains("unevaluated")) {
    const json& e = state.at("unevaluated");
    EpochMetrics m;
    const int last = std::min(point.next_epoch, spec.train_opts.epochs);
    m.epoch = static_cast<int>(checked_int(e.at(0), point.next_epoch, last, "unevaluated epoch"));
    m.train_loss = e.at(1).get<double>();
    m.images_per_s = e.at(2).get<double>();
    m.duration_s = e.at(3).get<double>();
    point.unevaluated = m;
  }
  return point;
}

}  // namespace mlswarm
