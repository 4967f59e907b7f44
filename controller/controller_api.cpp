#include "controller_api.h"

#include <cmath>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "image_decode.h"
#include "mlswarm/atomic_file.h"
#include "mlswarm/auth.h"
#include "mlswarm/error.h"
#include "mlswarm/ids.h"
#include "mlswarm/job_metrics.h"
#include "predict_input.h"

namespace mlswarm {

using nlohmann::json;

namespace {

json trainer_json(const TrainerView& t) {
  return {{"address", t.address}, {"capacity", t.capacity}, {"running", t.running},
          {"queued", t.queued},   {"last_seen", t.last_seen}, {"misses", t.misses}};
}

json dataset_json(const DatasetInfo& info) {
  return {{"name", info.name},
          {"input_shape", {info.channels, info.height, info.width}},
          {"class_tags", info.class_names},
          {"num_classes", info.class_names.size()},
          {"train_size", info.train_size},
          {"test_size", info.test_size},
          {"format", info.format}};
}

const DatasetInfo& known_dataset(const std::string& name) {
  const DatasetInfo* info = find_dataset_info(name);
  if (info == nullptr) {
    throw Error(ErrorCode::kNotFound, fmt::format("unknown dataset '{}'", name), "dataset");
  }
  return *info;
}

std::int64_t query_int(const HttpRequest& r, const std::string& name, std::int64_t fallback, std::int64_t lo,
                       std::int64_t hi) {
  auto text = r.query_param(name);
  if (!text) return fallback;
  std::int64_t value = 0;
  std::size_t used = 0;
  try {
    value = std::stoll(*text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used == 0 || used != text->size() || value < lo || value > hi) {
    throw Error(ErrorCode::kInvalidArgument, fmt::format("{} must be an integer in {}..{}", name, lo, hi), name);
  }
  return value;
}

}  // namespace

ControllerApi::ControllerApi(Cluster& cluster, JobRegistry& registry, ModelServer& models, DatasetCache& datasets,
                             ControllerApiOptions options)
    : cluster_(cluster), registry_(registry), models_(models), datasets_(datasets), options_(std::move(options)) {
  Metrics& m = Metrics::global();
  m.describe("mlswarm_trainers", "gauge", "trainers discovered");
  m.describe("mlswarm_model_loads_total", "counter", "model versions loaded for serving");
  m.describe("mlswarm_predict_forward_passes_total", "counter", "forward passes run for /predict and /classify");
  m.describe("mlswarm_predict_examples_total", "counter", "examples classified");
  collector_ = m.add_collector([this](Metrics& metrics) {
    set_job_gauges(metrics, registry_.list());
    metrics.set("mlswarm_trainers", {}, static_cast<double>(cluster_.trainers().size()));
    ModelServer::Stats serving = models_.stats();
    metrics.set("mlswarm_model_loads_total", {}, static_cast<double>(serving.loads));
    metrics.set("mlswarm_predict_forward_passes_total", {}, static_cast<double>(serving.batches));
    metrics.set("mlswarm_predict_examples_total", {}, static_cast<double>(serving.examples));
  });
}

ControllerApi::~ControllerApi() { Metrics::global().remove_collector(collector_); }

RouteAccess controller_route_access(const std::string& method, const std::string& path) {
  const auto parts = split_path(path);
  const std::string first = parts.empty() ? "" : parts[0];
  if (parts.size() == 1 && (first == "type" || first == "healthz" || first == "readyz")) return RouteAccess::kOpen;
  const bool reader = method == "GET" || method == "HEAD";
  if (reader && (first == "status" || first == "jobs" || first == "models" || first == "datasets" ||
                 first == "metrics")) {
    return RouteAccess::kRead;
  }
  return RouteAccess::kWrite;
}

HttpReply ControllerApi::handle(const HttpRequest& request) {
  return guarded(
      [this](const HttpRequest& r) {
        const RouteAccess access = controller_route_access(r.method, r.path);
        if (access == RouteAccess::kWrite || (access == RouteAccess::kRead && !options_.public_reads)) {
          require_token(r, options_.api_token, "API token");
        }
        return route(r);
      },
      request);
}

HttpReply ControllerApi::route(const HttpRequest& req) {
  const auto parts = split_path(req.path);
  const std::string& m = req.method;
  auto only = [&](const char* allowed) {
    if (m != allowed) {
      throw Error(ErrorCode::kMethodNotAllowed, fmt::format("{} {} is not supported; use {}", m, req.path, allowed));
    }
  };
  const std::string first = parts.empty() ? "" : parts[0];
  if (parts.size() == 1) {
    if (first == "type") return only("GET"), HttpReply::json(200, {{"type", "controller"}});
    if (first == "healthz") return only("GET"), HttpReply::json(200, {{"status", "ok"}});
    if (first == "readyz") {
      only("GET");
      if (auto why = cluster_.not_ready_reason()) throw Error(ErrorCode::kUnavailable, *why);
      return HttpReply::json(200, {{"ready", true}, {"trainers", cluster_.trainers().size()}});
    }
    if (first == "status") return only("GET"), status();
    if (first == "train") {
      only("POST");
      JobRecord job = cluster_.submit(parse_job_spec(parse_json_body(req)));
      return HttpReply::json(202, to_json(job, unix_now()));
    }
    if (first == "jobs") {
      only("GET");
      json jobs = json::array();
      const double now = unix_now();
      for (const auto& job : registry_.list()) jobs.push_back(to_json(job, now));
      return HttpReply::json(200, {{"jobs", std::move(jobs)}});
    }
    if (first == "models") return only("GET"), list_models();
    if (first == "metrics") return only("GET"), metrics_reply();
    if (first == "datasets") return only("GET"), datasets();
    if (first == "predict") return only("POST"), predict(req);
    if (first == "classify") return only("POST"), classify(req);
  }
  if (parts.size() == 2 && first == "jobs") {
    require_valid_id(parts[1], "job_id");
    if (m == "DELETE") return HttpReply::json(200, to_json(cluster_.cancel(parts[1]), unix_now()));
    only("GET");
    auto job = registry_.find(parts[1]);
    if (!job) throw Error(ErrorCode::kNotFound, fmt::format("unknown job '{}'", parts[1]), "job_id");
    return HttpReply::json(200, to_json(*job, unix_now()));
  }
  if (parts.size() == 2 && first == "models") {
    require_valid_id(parts[1], "model_id");
    return only("GET"), model(parts[1]);
  }
  if (parts.size() == 2 && first == "datasets") return only("GET"), dataset(parts[1]);
  if (parts.size() == 3 && first == "datasets" && parts[2] == "examples") return only("GET"), examples(parts[1], req);
  throw Error(ErrorCode::kNotFound, fmt::format("no route {} {}", m, req.path));
}

HttpReply ControllerApi::status() const {
  json trainers = json::array();
  for (const auto& t : cluster_.trainers()) trainers.push_back(trainer_json(t));
  json jobs = json::array();
  const double now = unix_now();
  for (const auto& job : registry_.list()) jobs.push_back(to_json(job, now));
  ModelServer::Stats serving = models_.stats();
  return HttpReply::json(200, {{"trainers", std::move(trainers)},
                               {"jobs", std::move(jobs)},
                               {"serving",
                                {{"model_loads", serving.loads},
                                 {"forward_passes", serving.batches},
                                 {"requests", serving.requests},
                                 {"examples", serving.examples}}}});
}

HttpReply ControllerApi::list_models() const {
  json models = json::array();
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(options_.home_dir / "models", ec)) {
    const std::string id = entry.path().filename().string();
    // Only real folders with valid names: a symlink must not lead the controller elsewhere.
    if (!is_valid_id(id) || entry.is_symlink() || !entry.is_directory()) continue;
    try {
      auto meta = model_meta_from_json(json::parse(read_file(entry.path() / "meta.json", 16u << 20)));
      models.push_back({{"model_id", meta.model_id},
                        {"model_type", meta.model_type},
                        {"dataset", meta.dataset},
                        {"version", meta.version},
                        {"accuracy", meta.epochs.empty() ? json(nullptr) : json(meta.epochs.back().accuracy)},
                        {"updated_at", meta.updated_at}});
    } catch (const std::exception&) {
      continue;  // a model being written for the first time, or not ours
    }
  }
  return HttpReply::json(200, {{"models", std::move(models)}});
}

HttpReply ControllerApi::model(const std::string& model_id) {
  return HttpReply::json(200, to_json(models_.meta(model_id)));
}

HttpReply ControllerApi::datasets() const {
  json out = json::array();
  for (const auto& name : dataset_names()) out.push_back(dataset_json(*find_dataset_info(name)));
  return HttpReply::json(200, {{"datasets", std::move(out)}});
}

HttpReply ControllerApi::dataset(const std::string& name) const {
  return HttpReply::json(200, dataset_json(known_dataset(name)));
}

HttpReply ControllerApi::examples(const std::string& name, const HttpRequest& req) {
  const DatasetInfo& info = known_dataset(name);
  std::string split_name = req.query_param("split").value_or("test");
  if (split_name != "test" && split_name != "train") {
    throw Error(ErrorCode::kInvalidArgument, "split must be \"train\" or \"test\"", "split");
  }
  auto data = datasets_.get(name);
  const DatasetSplit& split = split_name == "test" ? data->test : data->train;
  std::int64_t start = query_int(req, "start", 0, 0, split.count - 1);
  std::int64_t count = query_int(req, "count", 10, 1, static_cast<std::int64_t>(options_.max_examples));
  count = std::min(count, split.count - start);
  const std::int64_t plane = std::int64_t{info.height} * info.width;
  json examples = json::array();
  json labels = json::array();
  json tags = json::array();
  for (std::int64_t i = start; i < start + count; ++i) {
    const std::uint8_t* img = split.images.data() + i * info.channels * plane;
    json channels = json::array();
    for (int c = 0; c < info.channels; ++c) {
      json rows = json::array();
      for (int y = 0; y < info.height; ++y) {
        json row = json::array();
        for (int x = 0; x < info.width; ++x) {
          // Three decimals hold a byte's k/255 exactly enough to round-trip it.
          row.push_back(std::round(img[c * plane + y * info.width + x] / 255.0 * 1000.0) / 1000.0);
        }
        rows.push_back(std::move(row));
      }
      channels.push_back(std::move(rows));
    }
    examples.push_back(std::move(channels));
    labels.push_back(split.labels[static_cast<std::size_t>(i)]);
    tags.push_back(info.class_names[split.labels[static_cast<std::size_t>(i)]]);
  }
  return HttpReply::json(200, {{"dataset", name},
                               {"split", split_name},
                               {"start", start},
                               {"count", count},
                               {"examples", std::move(examples)},
                               {"labels", std::move(labels)},
                               {"class_tags", std::move(tags)}});
}

HttpReply ControllerApi::predict(const HttpRequest& req) {
  json body = parse_json_body(req);
  if (!body.is_object()) throw Error(ErrorCode::kInvalidArgument, "the body must be a JSON object");
  if (!body.contains("model_id") || !body["model_id"].is_string()) {
    throw Error(ErrorCode::kInvalidArgument, "model_id (a string) is required", "model_id");
  }
  std::string model_id = body["model_id"];
  require_valid_id(model_id, "model_id");
  if (!body.contains("examples")) throw Error(ErrorCode::kInvalidArgument, "examples is required", "examples");
  ModelMeta meta = models_.meta(model_id);
  std::vector<float> pixels = flatten_examples(body["examples"], meta, options_.max_examples);
  auto count = static_cast<std::int64_t>(body["examples"].size());
  PredictResult result = models_.predict(model_id, std::move(pixels), count);
  return HttpReply::json(200, {{"model_id", result.model_id},
                               {"version", result.version},
                               {"class_idxs", result.class_idxs},
                               {"class_tags", result.class_tags},
                               {"probabilities", result.probabilities}});
}

HttpReply ControllerApi::classify(const HttpRequest& req) {
  const UploadedFile* image = nullptr;
  std::string model_id = req.query_param("model_id").value_or("");
  for (const auto& f : req.files) {
    if (f.name == "image" || (image == nullptr && !f.filename.empty())) image = &f;
    if (f.name == "model_id") model_id = f.content;
  }
  if (image == nullptr) {
    if (req.header("content-type").find("multipart/form-data") == std::string::npos) {
      throw Error(ErrorCode::kUnsupportedMediaType, "send the image as multipart/form-data: curl -F image=@digit.png",
                  "image");
    }
    throw Error(ErrorCode::kInvalidArgument, "no image part in the upload (curl -F image=@file.png)", "image");
  }
  if (model_id.empty()) {
    // Like the seed's /classify: the most recently trained model.
    double newest = -1;
    json models = json::parse(list_models().body)["models"];
    for (const auto& m : models) {
      if (m["updated_at"].get<double>() > newest) {
        newest = m["updated_at"].get<double>();
        model_id = m["model_id"];
      }
    }
    if (model_id.empty()) throw Error(ErrorCode::kNotFound, "no trained model yet; train one first", "model_id");
  }
  require_valid_id(model_id, "model_id");
  ModelMeta meta = models_.meta(model_id);
  std::vector<float> pixels = decode_image(image->content, meta.channels, meta.height, meta.width);
  PredictResult result = models_.predict(model_id, std::move(pixels), 1);
  return HttpReply::json(200, {{"model_id", result.model_id},
                               {"version", result.version},
                               {"class", result.class_tags[0]},
                               {"class_idx", result.class_idxs[0]},
                               {"probability", result.probabilities[0][static_cast<std::size_t>(result.class_idxs[0])]}});
}

}  // namespace mlswarm
