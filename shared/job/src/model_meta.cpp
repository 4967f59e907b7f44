#include "mlswarm/model_meta.h"

#include <algorithm>
#include <cmath>

#include <fmt/format.h>

#include "mlswarm/error.h"
#include "mlswarm/ids.h"
#include "mlswarm/json_fields.h"

namespace mlswarm {

using nlohmann::json;

namespace {

/// {"accuracy": [K], "confusion": [[K] x K]} of the last epoch, or null.
json per_class_json(const ModelMeta& m) {
  const std::size_t k = m.class_names.size();
  if (m.confusion.size() != k * k || k == 0) return nullptr;
  json rows = json::array();
  for (std::size_t i = 0; i < k; ++i) {
    rows.push_back(std::vector<std::int64_t>(m.confusion.begin() + static_cast<std::ptrdiff_t>(i * k),
                                             m.confusion.begin() + static_cast<std::ptrdiff_t>((i + 1) * k)));
  }
  return {{"accuracy", per_class_accuracy(m)}, {"confusion", std::move(rows)}};
}

}  // namespace

json to_json(const ModelMeta& m) {
  json epochs = json::array();
  for (const auto& e : m.epochs) {
    epochs.push_back({{"epoch", e.epoch},
                      {"train_loss", e.train_loss},
                      {"test_loss", e.test_loss},
                      {"accuracy", e.accuracy},
                      {"images_per_s", e.images_per_s},
                      {"duration_s", e.duration_s}});
  }
  return {{"model_id", m.model_id},
          {"model_type", to_string(m.model_type)},
          {"dataset", m.dataset},
          {"class_names", m.class_names},
          {"input_shape", {m.channels, m.height, m.width}},
          {"normalization", {{"mean", m.mean}, {"std", m.std}}},
          {"epochs", epochs},
          {"accuracy", m.epochs.empty() ? json(nullptr) : json(m.epochs.back().accuracy)},
          {"job_id", m.job_id},
          {"attempt", m.attempt},
          {"version", m.version},
          {"model_crc32", m.model_crc32},
          {"spec", m.spec},
          {"updated_at", m.updated_at},
          {"per_class", per_class_json(m)}};
}

std::vector<double> per_class_accuracy(const ModelMeta& m) {
  const std::size_t k = m.class_names.size();
  std::vector<double> out;
  if (m.confusion.size() != k * k) return out;
  for (std::size_t i = 0; i < k; ++i) {
    std::int64_t row = 0;
    for (std::size_t j = 0; j < k; ++j) row += m.confusion[i * k + j];
    out.push_back(row > 0 ? static_cast<double>(m.confusion[i * k + i]) / static_cast<double>(row) : 0.0);
  }
  return out;
}

ModelMeta model_meta_from_json(const json& j) {
  try {
    ModelMeta m;
    m.model_id = j.at("model_id").get<std::string>();
    const auto type = parse_choice<ModelType>(j.at("model_type").get<std::string>());
    if (!type) throw Error(ErrorCode::kDataError, "meta.json: unknown model_type");
    m.model_type = *type;
    m.dataset = j.at("dataset").get<std::string>();
    m.class_names = j.at("class_names").get<std::vector<std::string>>();
    const json& shape = j.at("input_shape");
    if (!shape.is_array() || shape.size() != 3) {
      throw Error(ErrorCode::kDataError, "meta.json: input_shape must be [C, H, W]");
    }
    m.channels = static_cast<int>(checked_int(shape[0], 1, 4, "meta.json: input_shape[0]"));
    m.height = static_cast<int>(checked_int(shape[1], 1, 4096, "meta.json: input_shape[1]"));
    m.width = static_cast<int>(checked_int(shape[2], 1, 4096, "meta.json: input_shape[2]"));
    m.mean = j.at("normalization").at("mean").get<std::vector<double>>();
    m.std = j.at("normalization").at("std").get<std::vector<double>>();
    for (const auto& e : j.at("epochs")) {
      m.epochs.push_back({static_cast<int>(checked_int(e.at("epoch"), 0, 1000000, "meta.json: epoch")),
                          e.at("train_loss").get<double>(), e.at("test_loss").get<double>(),
                          e.at("accuracy").get<double>(), e.at("images_per_s").get<double>(),
                          e.at("duration_s").get<double>()});
    }
    m.job_id = j.value("job_id", "");
    m.attempt = static_cast<int>(checked_int_or(j, "attempt", 0, 0, 1000000000));
    m.version = static_cast<int>(checked_int(j.at("version"), 0, 1000000, "meta.json: version"));
    m.model_crc32 =
        static_cast<std::uint32_t>(checked_int(j.at("model_crc32"), 0, 0xffffffffLL, "meta.json: model_crc32"));
    m.spec = j.value("spec", json::object());
    m.updated_at = j.value("updated_at", 0.0);
    if (j.contains("per_class") && j["per_class"].is_object() && j["per_class"].contains("confusion")) {
      for (const auto& row : j["per_class"]["confusion"]) {
        for (const auto& v : row)
          m.confusion.push_back(checked_int(v, 0, std::int64_t{1} << 40, "meta.json: confusion"));
      }
      if (m.confusion.size() != m.class_names.size() * m.class_names.size()) m.confusion.clear();
    }
    if (!is_valid_id(m.model_id)) throw Error(ErrorCode::kDataError, "meta.json: invalid model_id");
    if (m.channels < 1 || m.channels > 4 || m.height < 1 || m.height > 4096 || m.width < 1 || m.width > 4096 ||
        m.mean.size() != static_cast<std::size_t>(m.channels) || m.std.size() != static_cast<std::size_t>(m.channels) ||
        m.class_names.empty() ||
        std::any_of(m.std.begin(), m.std.end(), [](double s) { return !(s > 0) || !std::isfinite(s); })) {
      throw Error(ErrorCode::kDataError, "meta.json: inconsistent input shape, normalization or classes");
    }
    return m;
  } catch (const json::exception& e) {
    throw Error(ErrorCode::kDataError, fmt::format("meta.json: {}", e.what()));
  }
}

void require_not_symlink(const std::filesystem::path& path, const char* field) {
  std::error_code ec;
  if (std::filesystem::is_symlink(path, ec)) {
    throw Error(
        ErrorCode::kInvalidArgument,
        fmt::format("{} is a symbolic link; mlswarm reads and writes only real files under HOME_DIR", path.string()),
        field);
  }
}

std::filesystem::path model_dir(const std::filesystem::path& home_dir, const std::string& model_id) {
  require_valid_id(model_id, "model_id");
  auto dir = home_dir / "models" / model_id;
  require_not_symlink(dir, "model_id");
  return dir;
}

std::filesystem::path job_dir(const std::filesystem::path& home_dir, const std::string& job_id) {
  require_valid_id(job_id, "job_id");
  auto dir = home_dir / "jobs" / job_id;
  require_not_symlink(dir, "job_id");
  return dir;
}

std::filesystem::path model_version_dir(const std::filesystem::path& home_dir, const std::string& model_id,
                                        int version) {
  auto dir = model_dir(home_dir, model_id);
  if (version < 0) throw Error(ErrorCode::kInvalidArgument, "version must be a positive integer", "version");
  if (version == 0) return dir;
  require_not_symlink(dir / "versions", "version");
  dir = dir / "versions" / std::to_string(version);
  require_not_symlink(dir, "version");
  return dir;
}

std::vector<int> model_versions(const std::filesystem::path& home_dir, const std::string& model_id) {
  std::vector<int> versions;
  const auto dir = model_dir(home_dir, model_id) / "versions";
  std::error_code ec;
  if (std::filesystem::is_symlink(dir, ec)) return versions;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (name.empty() || name.size() > 8 || name.find_first_not_of("0123456789") != std::string::npos) continue;
    if (entry.is_symlink() || !std::filesystem::is_regular_file(entry.path() / "meta.json", ec)) continue;
    const int n = std::stoi(name);
    if (n > 0) versions.push_back(n);
  }
  std::sort(versions.begin(), versions.end());
  return versions;
}

}  // namespace mlswarm
