#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "mlswarm/job.h"

namespace mlswarm {

/// Test metrics of one finished epoch.
struct EpochMetrics {
  int epoch = 0;
  double train_loss = 0;
  double test_loss = 0;
  double accuracy = 0;
  double images_per_s = 0;
  double duration_s = 0;
};

/// Everything needed to rebuild and use a trained model: `HOME_DIR/models/<id>/meta.json`.
struct ModelMeta {
  std::string model_id;
  ModelType model_type = ModelType::kConvnet;
  std::string dataset;
  std::vector<std::string> class_names;
  int channels = 1;
  int height = 28;
  int width = 28;
  std::vector<double> mean;  ///< per channel, applied to pixels scaled to 0..1
  std::vector<double> std;
  std::vector<EpochMetrics> epochs;
  std::string job_id;
  int attempt = 0;  ///< the attempt of the job that wrote these weights (fencing: only the current one writes)
  int version = 0;  ///< the number of epochs the weights in model.pt have seen
  std::uint32_t model_crc32 = 0;  ///< CRC-32 of model.pt, checked by readers
  nlohmann::json spec;
  double updated_at = 0;
  /// The last epoch's confusion matrix on the test split, K*K row-major (row: the true class,
  /// column: the predicted one); empty for models written before it existed.
  std::vector<std::int64_t> confusion;
};

/// Per class: the share of its test images predicted right (from `confusion`); empty without one.
std::vector<double> per_class_accuracy(const ModelMeta& meta);

nlohmann::json to_json(const ModelMeta& meta);
/// Throws Error(kDataError) when a field is missing or of the wrong type.
ModelMeta model_meta_from_json(const nlohmann::json& j);

/// HOME_DIR/models/<model_id> and HOME_DIR/jobs/<job_id>. Throw Error(kInvalidArgument) for
/// an invalid id, and when the folder is a symbolic link (it could lead outside HOME_DIR).
std::filesystem::path model_dir(const std::filesystem::path& home_dir, const std::string& model_id);
std::filesystem::path job_dir(const std::filesystem::path& home_dir, const std::string& job_id);
/// HOME_DIR/models/<id> for version 0 (the latest), HOME_DIR/models/<id>/versions/<version>
/// for a pinned one. Throws Error(kInvalidArgument) for an invalid id or a negative version,
/// and when either folder is a symbolic link.
std::filesystem::path model_version_dir(const std::filesystem::path& home_dir, const std::string& model_id,
                                        int version);
/// A file in versions/<n>/ that keeps the version from being pruned (KEEP_VERSIONS): a served
/// name pins it (PUT /deployments, a rollout's candidate). Never removed by mlswarm.
inline constexpr const char* kPinnedMarker = "pinned";

/// The pinned versions kept for a model (versions/<n>/ with a meta.json), ascending.
std::vector<int> model_versions(const std::filesystem::path& home_dir, const std::string& model_id);

/// Throws Error(kInvalidArgument, field) when `path` is a symbolic link.
void require_not_symlink(const std::filesystem::path& path, const char* field);

}  // namespace mlswarm
