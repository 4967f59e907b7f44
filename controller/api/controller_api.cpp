#include "controller_api.h"

#include <thread>

#include <algorithm>
#include <cmath>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "embedded_files.h"
#include "image_decode.h"
#include "inference_v2.h"
#include "mlswarm/build_info.h"
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
  return {{"address", t.address},
          {"capacity", t.capacity},
          {"running", t.running},
          {"queued", t.queued},
          {"last_seen", t.last_seen},
          {"misses", t.misses},
          {"trusted", t.trusted},
          {"suspect", t.suspect},
          {"draining", t.draining},
          {"state", !t.trusted   ? "untrusted"
                    : t.draining ? "draining"
                    : t.suspect  ? "suspect"
                                 : "ready"}};
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
                             ControllerApiOptions options, ReplicaHooks replicas)
    : cluster_(cluster),
      registry_(registry),
      models_(models),
      datasets_(datasets),
      options_(std::move(options)),
      replicas_(std::move(replicas)),
      decodes_(std::make_unique<std::counting_semaphore<>>(
          options_.max_decodes > 0 ? options_.max_decodes
                                   : std::max<std::ptrdiff_t>(1, std::thread::hardware_concurrency()))) {
  add_cluster_routes();
  add_serving_routes();
  add_dashboard_routes();
  add_inference_routes();
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

void ControllerApi::add_cluster_routes() {
  using A = Access;
  auto get = [this](std::string pattern, A access, RouteHandler handler) {
    routes_.add({"GET", std::move(pattern), access, 0, std::move(handler)});
  };
  get("/type", A::kOpen, [](const HttpRequest&, const RouteParams&) {
    return HttpReply::json(200, {{"type", "controller"}});
  });
  get("/healthz", A::kOpen, [](const HttpRequest&, const RouteParams&) {
    return HttpReply::json(200, {{"status", "ok"}});
  });
  get("/readyz", A::kOpen, [this](const HttpRequest&, const RouteParams&) {
    if (replicas_.not_ready) {
      if (auto why = replicas_.not_ready()) throw Error(ErrorCode::kUnavailable, *why);
    }
    const bool following = replicas_.following && replicas_.following();
    if (!following) {
      if (auto why = cluster_.not_ready_reason()) throw Error(ErrorCode::kUnavailable, *why);
    }
    return HttpReply::json(200, {{"ready", true}, {"trainers", cluster_.trainers().size()}});
  });
  get("/status", A::kRead, [this](const HttpRequest&, const RouteParams&) { return status(); });
  get("/metrics", A::kRead, [](const HttpRequest&, const RouteParams&) { return metrics_reply(); });
  get("/jobs", A::kRead, [this](const HttpRequest&, const RouteParams&) {
    json jobs = json::array();
    const double now = unix_now();
    for (const auto& job : registry_.list()) jobs.push_back(to_json(job, now));
    return HttpReply::json(200, {{"jobs", std::move(jobs)}});
  });
  get("/jobs/{id}", A::kRead, [this](const HttpRequest&, const RouteParams& p) {
    require_valid_id(p[0], "job_id");
    auto job = registry_.find(p[0]);
    if (!job) throw Error(ErrorCode::kNotFound, fmt::format("unknown job '{}'", p[0]), "job_id");
    return HttpReply::json(200, to_json(*job, unix_now()));
  });
  routes_.add({"DELETE", "/jobs/{id}", A::kWrite, 0, [this](const HttpRequest& r, const RouteParams& p) {
                 require_valid_id(p[0], "job_id");
                 if (auto leader = forwarded(r)) return *leader;
                 return HttpReply::json(200, to_json(cluster_.cancel(p[0]), unix_now()));
               }});
  routes_.add({"POST", "/train", A::kWrite, kMaxSpecBytes, [this](const HttpRequest& r, const RouteParams&) {
                 if (auto leader = forwarded(r)) return *leader;
                 JobRecord job = cluster_.submit(parse_job_spec(parse_json_body(r)));
                 return HttpReply::json(202, to_json(job, unix_now()));
               }});
}

void ControllerApi::add_serving_routes() {
  using A = Access;
  auto get = [this](std::string pattern, A access, RouteHandler handler) {
    routes_.add({"GET", std::move(pattern), access, 0, std::move(handler)});
  };
  get("/models", A::kRead, [this](const HttpRequest&, const RouteParams&) { return list_models(); });
  get("/models/{id}", A::kRead, [this](const HttpRequest&, const RouteParams& p) {
    require_valid_id(p[0], "model_id");
    return model(p[0]);
  });
  get("/datasets", A::kRead, [this](const HttpRequest&, const RouteParams&) { return this->datasets(); });
  get("/datasets/{id}", A::kRead, [this](const HttpRequest&, const RouteParams& p) { return dataset(p[0]); });
  get("/datasets/{id}/examples", A::kRead,
      [this](const HttpRequest& r, const RouteParams& p) { return examples(p[0], r); });
  routes_.add({"POST", "/predict", A::kWrite, options_.max_upload_bytes,
               [this](const HttpRequest& r, const RouteParams&) { return predict(r); }});
  routes_.add({"POST", "/classify", A::kWrite, options_.max_upload_bytes,
               [this](const HttpRequest& r, const RouteParams&) { return classify(r); }});
}

namespace {

/// A dashboard file with headers that keep the page to itself: scripts, styles and calls only
/// from this origin, no framing, no referrer.
HttpReply dashboard_reply(std::string_view url) {
  const dashboard::EmbeddedFile* file = dashboard::find_file(url);
  if (file == nullptr) throw Error(ErrorCode::kNotFound, fmt::format("no dashboard file {}", url));
  HttpReply reply;
  reply.content_type = std::string(dashboard::content_type(url));
  reply.body = std::string(file->body);
  reply.headers["Content-Security-Policy"] =
      "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data: blob:; "
      "form-action 'self'; frame-ancestors 'none'; base-uri 'none'";
  reply.headers["X-Content-Type-Options"] = "nosniff";
  reply.headers["Referrer-Policy"] = "no-referrer";
  reply.headers["Cache-Control"] = "no-cache";
  return reply;
}

}  // namespace

void ControllerApi::add_dashboard_routes() {
  auto get = [this](std::string pattern, RouteHandler handler) {
    routes_.add({"GET", std::move(pattern), Access::kOpen, 0, std::move(handler)});
  };
  get("/", [](const HttpRequest&, const RouteParams&) { return dashboard_reply("/ui/index.html"); });
  get("/ui/config.json", [this](const HttpRequest&, const RouteParams&) {
    return HttpReply::json(200, {{"auth", !options_.api_token.empty()},
                                 {"public_reads", options_.public_reads},
                                 {"version", mlswarm_version()}});
  });
  get("/ui/{file}", [](const HttpRequest&, const RouteParams& p) { return dashboard_reply("/ui/" + p[0]); });
}

void ControllerApi::add_inference_routes() {
  using A = Access;
  auto get = [this](std::string pattern, A access, RouteHandler handler) {
    routes_.add({"GET", std::move(pattern), access, 0, std::move(handler)});
  };
  auto empty = [](int status) {
    HttpReply reply;
    reply.status = status;
    reply.content_type = "text/plain";
    return reply;
  };
  get("/v2", A::kRead,
      [](const HttpRequest&, const RouteParams&) { return HttpReply::json(200, v2::server_metadata()); });
  get("/v2/health/live", A::kOpen, [empty](const HttpRequest&, const RouteParams&) { return empty(200); });
  get("/v2/health/ready", A::kOpen, [this, empty](const HttpRequest&, const RouteParams&) {
    // Serving needs no trainer (unlike /readyz): only a draining replica is not ready.
    const bool draining = replicas_.not_ready && replicas_.not_ready().has_value();
    return empty(draining ? 503 : 200);
  });
  auto metadata = [this](const std::string& m, int v) {
    return HttpReply::json(200, v2::model_metadata(models_.meta(m, v), model_versions(options_.home_dir, m)));
  };
  get("/v2/models/{m}", A::kRead, [metadata](const HttpRequest&, const RouteParams& p) { return metadata(p[0], 0); });
  get("/v2/models/{m}/versions/{v}", A::kRead,
      [metadata](const HttpRequest&, const RouteParams& p) { return metadata(p[0], v2::parse_version(p[1])); });
  auto ready = [this, empty](const std::string& m, int v) {
    models_.meta(m, v);  // loads it; throws 404 when absent
    return empty(200);
  };
  get("/v2/models/{m}/ready", A::kRead, [ready](const HttpRequest&, const RouteParams& p) { return ready(p[0], 0); });
  get("/v2/models/{m}/versions/{v}/ready", A::kRead,
      [ready](const HttpRequest&, const RouteParams& p) { return ready(p[0], v2::parse_version(p[1])); });
  auto config = [this](const std::string& m, int v) {
    return HttpReply::json(200, v2::model_config(models_.meta(m, v), options_.max_batch, options_.max_delay_us));
  };
  get("/v2/models/{m}/config", A::kRead,
      [config](const HttpRequest&, const RouteParams& p) { return config(p[0], 0); });
  get("/v2/models/{m}/versions/{v}/config", A::kRead,
      [config](const HttpRequest&, const RouteParams& p) { return config(p[0], v2::parse_version(p[1])); });
  routes_.add({"POST", "/v2/models/{m}/infer", A::kWrite, options_.max_upload_bytes,
               [this](const HttpRequest& r, const RouteParams& p) { return infer(p[0], 0, r); }});
  routes_.add({"POST", "/v2/models/{m}/versions/{v}/infer", A::kWrite, options_.max_upload_bytes,
               [this](const HttpRequest& r, const RouteParams& p) { return infer(p[0], v2::parse_version(p[1]), r); }});
}

HttpReply ControllerApi::infer(const std::string& model_id, int version, const HttpRequest& request) {
  require_valid_id(model_id, "model_id");
  auto model = models_.model(model_id, version);
  const ModelMeta& meta = ModelServer::meta_of(*model);
  v2::InferRequest parsed = v2::parse_infer(request, meta, options_.max_examples);
  PredictResult result = models_.predict(model, std::move(parsed.pixels), parsed.count);
  return v2::infer_reply(parsed, result, meta);
}

HttpReply ControllerApi::finish_error(const HttpRequest& request, HttpReply reply) {
  if (request.path == "/v2" || request.path.rfind("/v2/", 0) == 0) return v2::reshape_error(std::move(reply));
  return reply;
}

ControllerApi::~ControllerApi() { Metrics::global().remove_collector(collector_); }

void ControllerApi::check_access(const HttpRequest& head, const Route* route) {
  // Without a route nothing is said about what exists to a caller without the token.
  const Access access = route != nullptr ? route->access : Access::kWrite;
  if (access == Access::kWrite || (access == Access::kRead && !options_.public_reads)) {
    require_token(head, options_.api_token, "API token");
  }
}

HttpReply ControllerApi::status() const {
  json trainers = json::array();
  for (const auto& t : cluster_.trainers()) trainers.push_back(trainer_json(t));
  json jobs = json::array();
  const double now = unix_now();
  for (const auto& job : registry_.list()) jobs.push_back(to_json(job, now));
  ModelServer::Stats serving = models_.stats();
  json out = {{"trainers", std::move(trainers)},
              {"jobs", std::move(jobs)},
              {"serving",
               {{"model_loads", serving.loads},
                {"forward_passes", serving.batches},
                {"requests", serving.requests},
                {"examples", serving.examples}}}};
  if (replicas_.describe) out["controller"] = replicas_.describe();
  return HttpReply::json(200, out);
}

std::optional<HttpReply> ControllerApi::forwarded(const HttpRequest& request) const {
  if (!replicas_.forward_to_leader) return std::nullopt;
  return replicas_.forward_to_leader(request);
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
                        {"versions", model_versions(options_.home_dir, meta.model_id)},
                        {"accuracy", meta.epochs.empty() ? json(nullptr) : json(meta.epochs.back().accuracy)},
                        {"updated_at", meta.updated_at}});
    } catch (const std::exception&) {
      continue;  // a model being written for the first time, or not ours
    }
  }
  return HttpReply::json(200, {{"models", std::move(models)}});
}

HttpReply ControllerApi::model(const std::string& model_id) {
  json out = to_json(models_.meta(model_id));
  out["versions"] = model_versions(options_.home_dir, model_id);
  return HttpReply::json(200, out);
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
  require_json_content(req);
  // The usual body takes one pass over its text; anything unusual (and every error) goes
  // through the full JSON parser below, which says precisely what is wrong.
  if (auto scanned = scan_predict_body(req.body, options_.max_examples, kMaxJsonDepth);
      scanned && is_valid_id(scanned->model_id)) {
    auto model = models_.model(scanned->model_id, scanned->version);
    const ModelMeta& meta = ModelServer::meta_of(*model);
    const auto chw = static_cast<std::uint32_t>(meta.channels * meta.height * meta.width);
    if (std::all_of(scanned->sizes.begin(), scanned->sizes.end(), [&](std::uint32_t n) { return n == chw; })) {
      const auto count = static_cast<std::int64_t>(scanned->sizes.size());
      return HttpReply::json_text(predict_reply_json(models_.predict(model, std::move(scanned->pixels), count)));
    }
  }
  json body = parse_json_body(req);
  if (!body.is_object()) throw Error(ErrorCode::kInvalidArgument, "the body must be a JSON object");
  if (!body.contains("model_id") || !body["model_id"].is_string()) {
    throw Error(ErrorCode::kInvalidArgument, "model_id (a string) is required", "model_id");
  }
  std::string model_id = body["model_id"];
  require_valid_id(model_id, "model_id");
  if (!body.contains("examples")) throw Error(ErrorCode::kInvalidArgument, "examples is required", "examples");
  int version = 0;  // the latest
  if (body.contains("version") && !body["version"].is_null()) {
    if (!body["version"].is_number_integer() || body["version"].get<std::int64_t>() < 1 ||
        body["version"].get<std::int64_t>() > 99999999) {
      throw Error(ErrorCode::kInvalidArgument, "version must be a positive integer (an epoch kept under versions/)",
                  "version");
    }
    version = body["version"].get<int>();
  }
  auto model = models_.model(model_id, version);
  std::vector<float> pixels = flatten_examples(body["examples"], ModelServer::meta_of(*model), options_.max_examples);
  auto count = static_cast<std::int64_t>(body["examples"].size());
  return HttpReply::json_text(predict_reply_json(models_.predict(model, std::move(pixels), count)));
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
  auto model = models_.model(model_id);
  const ModelMeta& meta = ModelServer::meta_of(*model);
  std::vector<float> pixels;
  {
    // Decoding is the costly part of an upload (memory up to the pixel area, times the
    // channels): a bounded number at once, the others wait.
    decodes_->acquire();
    struct Release {
      std::counting_semaphore<>& s;
      ~Release() { s.release(); }
    } release{*decodes_};
    pixels = decode_image(image->content, meta.channels, meta.height, meta.width, options_.max_image_pixels);
  }
  PredictResult result = models_.predict(model, std::move(pixels), 1);
  return HttpReply::json(200, {{"model_id", result.model_id},
                               {"version", result.version},
                               {"class", result.class_tags[0]},
                               {"class_idx", result.class_idxs[0]},
                               {"probability", result.probabilities[0][static_cast<std::size_t>(result.class_idxs[0])]},
                               {"classes", meta.class_names},
                               {"probabilities", result.probabilities[0]}});
}

}  // namespace mlswarm
