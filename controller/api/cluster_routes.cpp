// The cluster's routes: jobs, trainers, models, datasets and their examples.

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
#include "mlswarm/folder_dataset.h"
#include "mlswarm/ids.h"
#include "mlswarm/job_metrics.h"
#include "mlswarm/log.h"
#include "predict_input.h"
#include "rollout.h"
#include "searcher.h"

namespace mlswarm {

using nlohmann::json;

namespace {

json dataset_json(const DatasetInfo& info) {
  return {{"name", info.name},
          {"input_shape", {info.channels, info.height, info.width}},
          {"class_tags", info.class_names},
          {"num_classes", info.class_names.size()},
          {"train_size", info.train_size},
          {"test_size", info.test_size},
          {"format", info.format}};
}

/// A built-in dataset's facts or a registered folder's; 404 for a name that is neither.
DatasetInfo known_dataset(const std::string& name, const std::filesystem::path& home_dir) {
  require_valid_id(name, "dataset");
  if (const DatasetInfo* info = find_dataset_info(name)) return *info;
  if (auto manifest = read_folder_manifest(home_dir, name)) return manifest->info();
  throw Error(ErrorCode::kNotFound, fmt::format("unknown dataset '{}'", name), "dataset");
}

/// GET /datasets/{name} of a folder dataset: its classes with their counts and the files
/// its scan skipped, and why.
json folder_json(const FolderManifest& m) {
  json out = dataset_json(m.info());
  std::vector<std::int64_t> train(m.classes.size(), 0);
  std::vector<std::int64_t> test(m.classes.size(), 0);
  for (const auto& f : m.train) ++train[static_cast<std::size_t>(f.label)];
  for (const auto& f : m.test) ++test[static_cast<std::size_t>(f.label)];
  json classes = json::array();
  for (std::size_t c = 0; c < m.classes.size(); ++c) {
    classes.push_back({{"name", m.classes[c]}, {"train", train[c]}, {"test", test[c]}});
  }
  json skipped = json::array();
  for (const auto& s : m.skipped) skipped.push_back({{"path", s.path}, {"why", s.why}});
  out["classes"] = std::move(classes);
  out["skipped"] = std::move(skipped);
  out["path"] = m.path;
  out["test_split"] = m.test_folder ? "test/" : fmt::format("{:g} of each class of train/", m.test_fraction);
  out["content_hash"] = m.content_hash;
  out["registered_at"] = m.registered_at;
  return out;
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

void ControllerApi::refuse_sweep_ids(const JobSpec& spec) const {
  if (sweeps_ == nullptr) return;
  for (const auto& [id, field] : {std::pair{&spec.job_id, "job_id"}, std::pair{&spec.model_id, "model_id"}}) {
    if (auto owner = sweeps_->claimant(*id)) {
      throw Error(
          ErrorCode::kConflict,
          fmt::format("{} '{}' belongs to sweep '{}' (its model, or a trial's job or model)", field, *id, *owner),
          field);
    }
  }
}

void ControllerApi::add_cluster_routes() {
  using A = Access;
  auto get = [this](std::string pattern, A access, RouteHandler handler) {
    routes_.add({"GET", std::move(pattern), access, 0, std::move(handler)});
  };
  // Probes: answered on the network thread, never behind other work.
  auto probe = [this](std::string pattern, RouteHandler handler) {
    routes_.add({"GET", std::move(pattern), A::kOpen, 0, std::move(handler), true});
  };
  probe("/type", [](const HttpRequest&, const RouteParams&) { return HttpReply::json(200, {{"type", "controller"}}); });
  probe("/healthz", [](const HttpRequest&, const RouteParams&) { return HttpReply::json(200, {{"status", "ok"}}); });
  probe("/readyz", [this](const HttpRequest&, const RouteParams&) {
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
                 JobSpec spec = parse_job_spec(parse_json_body(r));
                 require_dataset(spec.dataset, options_.home_dir);
                 refuse_sweep_ids(spec);
                 if (!spec.deploy.is_null())
                   deploy_rollout_spec(spec.deploy, spec.model_id.empty() ? "m" : spec.model_id);
                 JobRecord job = cluster_.submit(std::move(spec));
                 return HttpReply::json(202, to_json(job, unix_now()));
               }});
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
                        {"model_type", to_string(meta.model_type)},
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
  for (const auto& name : folder_dataset_names(options_.home_dir)) {
    try {
      if (auto m = read_folder_manifest(options_.home_dir, name)) out.push_back(dataset_json(m->info()));
    } catch (const Error& e) {
      if (log_allowed("dataset manifest " + name, std::chrono::seconds(60))) {
        spdlog::warn("dataset {}: its manifest does not read: {}", name, e.what());
      }
    }
  }
  return HttpReply::json(200, {{"datasets", std::move(out)}});
}

HttpReply ControllerApi::dataset(const std::string& name) const {
  require_valid_id(name, "dataset");
  if (const DatasetInfo* info = find_dataset_info(name)) return HttpReply::json(200, dataset_json(*info));
  if (auto m = read_folder_manifest(options_.home_dir, name)) return HttpReply::json(200, folder_json(*m));
  throw Error(ErrorCode::kNotFound, fmt::format("unknown dataset '{}'", name), "dataset");
}

HttpReply ControllerApi::register_dataset(const HttpRequest& req) {
  const FolderRequest request = parse_folder_request(parse_json_body(req));
  const auto started = std::chrono::steady_clock::now();
  const FolderManifest m = scan_image_folder(options_.home_dir, request);
  write_folder_manifest(options_.home_dir, m);
  spdlog::info(
      "dataset {} registered from {}: {} classes, {} train and {} test images at {}x{}x{}, {} files skipped, "
      "{:.1f} s",
      m.name, m.path, m.classes.size(), m.train.size(), m.test.size(), m.channels, m.height, m.width, m.skipped.size(),
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
  return HttpReply::json(201, folder_json(m));
}

HttpReply ControllerApi::examples(const std::string& name, const HttpRequest& req) {
  const DatasetInfo info = known_dataset(name, options_.home_dir);
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

}  // namespace mlswarm
