// Serving's routes: /predict, /classify and KServe v2 inference.

#include "controller_api.h"

#include <thread>

#include <algorithm>
#include <cmath>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "embedded_files.h"
#include "mlswarm/image_decode.h"
#include "inference_v2.h"
#include "mlswarm/build_info.h"
#include "mlswarm/atomic_file.h"
#include "mlswarm/auth.h"
#include "mlswarm/error.h"
#include "mlswarm/ids.h"
#include "mlswarm/job_metrics.h"
#include "mlswarm/metrics.h"
#include "predict_input.h"
#include "deployments.h"
#include "rollout_serving.h"

namespace mlswarm {

using nlohmann::json;

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
  routes_.add({"POST", "/datasets", A::kWrite, 4096,
               [this](const HttpRequest& r, const RouteParams&) { return register_dataset(r); }});
  get("/datasets/{id}", A::kRead, [this](const HttpRequest&, const RouteParams& p) { return dataset(p[0]); });
  get("/datasets/{id}/examples", A::kRead,
      [this](const HttpRequest& r, const RouteParams& p) { return examples(p[0], r); });
  routes_.add({"POST", "/predict", A::kWrite, options_.max_upload_bytes,
               [this](const HttpRequest& r, const RouteParams&) { return predict(r); }});
  routes_.add({"POST", "/classify", A::kWrite, options_.max_upload_bytes,
               [this](const HttpRequest& r, const RouteParams&) { return classify(r); }});
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
  auto probe = [this](std::string pattern, RouteHandler handler) {
    routes_.add({"GET", std::move(pattern), A::kOpen, 0, std::move(handler), true});
  };
  probe("/v2/health/live", [empty](const HttpRequest&, const RouteParams&) { return empty(200); });
  probe("/v2/health/ready", [this, empty](const HttpRequest&, const RouteParams&) {
    // Serving needs no trainer (unlike /readyz): only a draining replica is not ready.
    const bool draining = replicas_.not_ready && replicas_.not_ready().has_value();
    return empty(draining ? 503 : 200);
  });
  // A deployment's name answers with what it serves (its stable version).
  auto meta_for = [this](const std::string& m, int v) {
    if (rollouts_.store != nullptr && v == 0) {
      if (auto target = rollouts_.store->target(m))
        return models_.meta(target->stable.model_id, target->stable.version);
    }
    return models_.meta(m, v);
  };
  auto metadata = [this, meta_for](const std::string& m, int v) {
    const ModelMeta meta = meta_for(m, v);
    return HttpReply::json(200, v2::model_metadata(meta, model_versions(options_.home_dir, meta.model_id)));
  };
  get("/v2/models/{m}", A::kRead, [metadata](const HttpRequest&, const RouteParams& p) { return metadata(p[0], 0); });
  get("/v2/models/{m}/versions/{v}", A::kRead,
      [metadata](const HttpRequest&, const RouteParams& p) { return metadata(p[0], v2::parse_version(p[1])); });
  auto ready = [meta_for, empty](const std::string& m, int v) {
    meta_for(m, v);  // loads it; throws 404 when absent
    return empty(200);
  };
  get("/v2/models/{m}/ready", A::kRead, [ready](const HttpRequest&, const RouteParams& p) { return ready(p[0], 0); });
  get("/v2/models/{m}/versions/{v}/ready", A::kRead,
      [ready](const HttpRequest&, const RouteParams& p) { return ready(p[0], v2::parse_version(p[1])); });
  auto config = [this, meta_for](const std::string& m, int v) {
    return HttpReply::json(200, v2::model_config(meta_for(m, v), options_.max_batch, options_.max_delay_us));
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

/// What answers one serving request: a model id's latest (or pinned) version, or what a
/// deployment's name serves for this request's key (its stable, or a canary's candidate).
struct ControllerApi::Served {
  RolloutServing::Choice choice;
  const ModelMeta& meta() const { return ModelServer::meta_of(*choice.model); }
};

namespace {

/// The key a canary splits on: the client's X-Request-Key, else its address (sticky per client).
std::string request_key(const HttpRequest& request) {
  std::string key = request.header("x-request-key");
  return key.empty() ? request.remote_addr : key.substr(0, 256);
}

}  // namespace

ControllerApi::Served ControllerApi::served_by(const std::string& name, int version, const HttpRequest& request) {
  require_valid_id(name, "model_id");
  Served served;
  if (rollouts_.serving == nullptr) {
    served.choice.model = models_.model(name, version);
  } else {
    served.choice = rollouts_.serving->choose(name, version, request_key(request));
  }
  return served;
}

PredictResult ControllerApi::classify_with(Served& served, std::vector<float> pixels, std::int64_t count) {
  if (rollouts_.serving == nullptr || served.choice.deployment.empty()) {
    return models_.predict(served.choice.model, std::move(pixels), count);
  }
  std::vector<float> second = served.choice.other ? pixels : std::vector<float>();
  const auto started = std::chrono::steady_clock::now();
  const auto elapsed = [&] {
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - started).count();
  };
  Metrics::global().inc("mlswarm_served_requests_total",
                        {{"name", served.choice.deployment}, {"variant", served.choice.variant}});
  try {
    PredictResult result = models_.predict(served.choice.model, std::move(pixels), count);
    rollouts_.serving->answered(served.choice, std::move(second), count, &result, elapsed());
    return result;
  } catch (...) {
    rollouts_.serving->answered(served.choice, {}, count, nullptr, elapsed());
    throw;
  }
}

HttpReply ControllerApi::infer(const std::string& model_id, int version, const HttpRequest& request) {
  Served served = served_by(model_id, version, request);
  const ModelMeta& meta = served.meta();
  v2::InferRequest parsed = v2::parse_infer(request, meta, options_.max_examples, options_.max_values);
  PredictResult result = classify_with(served, std::move(parsed.pixels), parsed.count);
  HttpReply reply = v2::infer_reply(parsed, result, meta);
  if (!served.choice.deployment.empty()) {
    reply.headers["X-Mlswarm-Deployment"] = served.choice.deployment;
    reply.headers["X-Mlswarm-Variant"] = served.choice.variant;
  }
  return reply;
}

HttpReply ControllerApi::predict(const HttpRequest& req) {
  require_json_content(req);
  // The usual body takes one pass over its text; anything unusual (and every error) goes
  // through the full JSON parser below, which says precisely what is wrong.
  bool too_many = false;
  if (auto scanned = scan_predict_body(req.body, options_.max_examples, kMaxJsonDepth, options_.max_values, &too_many);
      scanned && is_valid_id(scanned->model_id)) {
    Served served = served_by(scanned->model_id, scanned->version, req);
    const ModelMeta& meta = served.meta();
    const auto chw = static_cast<std::uint32_t>(meta.channels * meta.height * meta.width);
    if (std::all_of(scanned->sizes.begin(), scanned->sizes.end(), [&](std::uint32_t n) { return n == chw; })) {
      const auto count = static_cast<std::int64_t>(scanned->sizes.size());
      PredictResult result = classify_with(served, std::move(scanned->pixels), count);
      return HttpReply::json_text(predict_reply_json(result, served.choice.deployment, served.choice.variant));
    }
  }
  if (too_many) {
    throw Error(ErrorCode::kPayloadTooLarge,
                fmt::format("the body holds more than {} numbers (PREDICT_MAX_VALUES)", options_.max_values),
                "examples");
  }
  json body = parse_json_body(req, options_.max_values);
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
  Served served = served_by(model_id, version, req);
  std::vector<float> pixels = flatten_examples(body["examples"], served.meta(), options_.max_examples);
  auto count = static_cast<std::int64_t>(body["examples"].size());
  PredictResult result = classify_with(served, std::move(pixels), count);
  return HttpReply::json_text(predict_reply_json(result, served.choice.deployment, served.choice.variant));
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
  Served served = served_by(model_id, 0, req);
  const ModelMeta& meta = served.meta();
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
  PredictResult result = classify_with(served, std::move(pixels), 1);
  json reply = {{"model_id", result.model_id},
                {"version", result.version},
                {"class", result.class_tags[0]},
                {"class_idx", result.class_idxs[0]},
                {"probability", result.probabilities[0][static_cast<std::size_t>(result.class_idxs[0])]},
                {"classes", meta.class_names},
                {"probabilities", result.probabilities[0]}};
  if (!served.choice.deployment.empty()) {
    reply["deployment"] = served.choice.deployment;
    reply["variant"] = served.choice.variant;
  }
  return HttpReply::json(200, reply);
}

}  // namespace mlswarm
