#pragma once

// The Open Inference Protocol (KServe "v2", REST) as mlswarm speaks it: parsing infer
// requests (JSON and the binary-data extension) into pixels for the batcher, and writing
// replies, model metadata and the Triton-style model config. No LibTorch, no sockets.

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "batcher.h"
#include "mlswarm/http.h"
#include "mlswarm/model_meta.h"

namespace mlswarm::v2 {

/// The header that carries the JSON part's length in a binary-data request or reply.
inline constexpr const char* kHeaderLength = "Inference-Header-Content-Length";

struct RequestedOutput {
  std::string name;        ///< "probabilities" or "class_idx"
  int classification = 0;  ///< > 0: the top-k "score:index:label" strings instead (BYTES)
  bool binary = false;     ///< parameters.binary_data: raw bytes after the JSON
};

struct InferRequest {
  std::string id;                        ///< echoed back when given
  std::vector<float> pixels;             ///< 0..1, N*C*H*W
  std::int64_t count = 0;                ///< N
  std::vector<RequestedOutput> outputs;  ///< empty: both, in JSON
};

/// Parses an infer request for `meta`'s input shape. Throws Error(kInvalidArgument) with the
/// protocol's wording for a bad body, shape, datatype, data or output, and
/// Error(kPayloadTooLarge) past `max_examples`, or as soon as the JSON holds more than
/// `max_values` values (counted while parsing).
InferRequest parse_infer(const HttpRequest& request, const ModelMeta& meta, std::size_t max_examples,
                         std::size_t max_values = SIZE_MAX);

/// The infer reply: JSON, or JSON plus raw bytes (with kHeaderLength) when an output asked for
/// binary data.
HttpReply infer_reply(const InferRequest& request, const PredictResult& result, const ModelMeta& meta);

/// GET /v2/models/{m}[/versions/{v}]: name, versions, platform, inputs, outputs (batch dim -1).
nlohmann::json model_metadata(const ModelMeta& meta, const std::vector<int>& versions);

/// GET /v2/models/{m}/config: the subset of Triton's model config perf_analyzer reads.
nlohmann::json model_config(const ModelMeta& meta, int max_batch_size, int max_queue_delay_us);

/// GET /v2: server metadata.
nlohmann::json server_metadata();

/// An error reply in the protocol's shape: {"error": "<message>"}.
HttpReply error_reply(int status, const std::string& message);

/// The protocol's shape of any of our JSON error replies ({"error": {"code", "message"}}).
HttpReply reshape_error(HttpReply reply);

/// A positive version from a path segment; Error(kInvalidArgument) otherwise.
int parse_version(const std::string& text);

}  // namespace mlswarm::v2
