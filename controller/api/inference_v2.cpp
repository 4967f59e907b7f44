#include "inference_v2.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include <fmt/format.h>

#include "mlswarm/build_info.h"
#include "mlswarm/error.h"

namespace mlswarm::v2 {

using nlohmann::json;

namespace {

[[noreturn]] void bad(const std::string& message) { throw Error(ErrorCode::kInvalidArgument, message); }

/// The body's JSON part and, with the binary-data extension, the bytes after it.
struct Parts {
  json header;
  std::string_view binary;
};

Parts split_body(const HttpRequest& request, std::size_t max_values) {
  const std::string length_text = request.header("inference-header-content-length");
  std::size_t json_length = request.body.size();
  if (!length_text.empty()) {
    std::size_t used = 0;
    unsigned long long value = 0;
    try {
      value = std::stoull(length_text, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used == 0 || used != length_text.size() || value > request.body.size()) {
      bad(fmt::format("{} is {}, the body has {} bytes", kHeaderLength, length_text, request.body.size()));
    }
    json_length = static_cast<std::size_t>(value);
  }
  const std::string_view text(request.body.data(), json_length);
  if (json_nesting_depth(text) > kMaxJsonDepth) bad("the request's JSON is nested too deeply");
  Parts parts{json(), std::string_view(request.body).substr(json_length)};
  try {
    parts.header = parse_json_bounded(text, max_values);
  } catch (const Error& e) {
    if (e.code() == ErrorCode::kPayloadTooLarge) throw;
    bad("the request body is not a JSON object");
  }
  if (!parts.header.is_object()) bad("the request body is not a JSON object");
  return parts;
}

std::vector<std::int64_t> parse_shape(const json& input, const ModelMeta& meta, std::size_t max_examples) {
  if (!input.contains("shape") || !input["shape"].is_array()) bad("input 'shape' is required (a list of integers)");
  std::vector<std::int64_t> shape;
  for (const auto& d : input["shape"]) {
    if (!d.is_number_integer() || d.get<std::int64_t>() < 1 || d.get<std::int64_t>() > (1 << 24)) {
      bad("input 'shape' must hold positive integers");
    }
    shape.push_back(d.get<std::int64_t>());
  }
  const std::vector<std::int64_t> want{meta.channels, meta.height, meta.width};
  if (shape.size() != 4 || !std::equal(want.begin(), want.end(), shape.begin() + 1)) {
    bad(fmt::format("input shape {} does not match the model's [-1,{},{},{}]", input["shape"].dump(), meta.channels,
                    meta.height, meta.width));
  }
  if (static_cast<std::size_t>(shape[0]) > max_examples) {
    throw Error(ErrorCode::kPayloadTooLarge,
                fmt::format("a batch of {} examples; the limit is {}", shape[0], max_examples));
  }
  return shape;
}

/// Row-major data, flat or nested, `expected` numbers in range.
void flatten_json(const json& value, const std::string& datatype, std::size_t expected, std::vector<float>& out) {
  if (value.is_array()) {
    for (const auto& v : value) {
      flatten_json(v, datatype, expected, out);
      if (out.size() > expected) return;
    }
    return;
  }
  if (!value.is_number()) bad("input 'data' must hold only numbers");
  const double x = value.get<double>();
  if (datatype == "UINT8") {
    if (!value.is_number_integer() || x < 0 || x > 255) bad(fmt::format("UINT8 data holds {}", value.dump()));
    out.push_back(static_cast<float>(x / 255.0));
  } else {
    if (!std::isfinite(x) || x < 0.0 || x > 1.0) bad(fmt::format("FP32 data holds {}; pixels must be in 0..1", x));
    out.push_back(static_cast<float>(x));
  }
}

void decode_binary(std::string_view bytes, const std::string& datatype, std::size_t expected, std::vector<float>& out) {
  const std::size_t width = datatype == "UINT8" ? 1 : 4;
  if (bytes.size() != expected * width) {
    bad(fmt::format("binary_data_size is {} bytes; shape and {} need {}", bytes.size(), datatype, expected * width));
  }
  out.resize(expected);
  for (std::size_t i = 0; i < expected; ++i) {
    if (width == 1) {
      out[i] = static_cast<float>(static_cast<unsigned char>(bytes[i]) / 255.0);
      continue;
    }
    std::uint32_t bits = 0;  // little-endian on the wire, as on every host we build for
    std::memcpy(&bits, bytes.data() + 4 * i, 4);
    float x = 0;
    std::memcpy(&x, &bits, 4);
    if (!std::isfinite(x) || x < 0.0F || x > 1.0F) bad(fmt::format("FP32 data holds {}; pixels must be in 0..1", x));
    out[i] = x;
  }
}

std::vector<RequestedOutput> parse_outputs(const json& header, int classes) {
  std::vector<RequestedOutput> outputs;
  bool binary_default = false;
  if (header.contains("parameters") && header["parameters"].is_object() &&
      header["parameters"].contains("binary_data_output")) {
    const json& b = header["parameters"]["binary_data_output"];
    if (!b.is_boolean()) bad("parameters.binary_data_output must be true or false");
    binary_default = b.get<bool>();
  }
  if (!header.contains("outputs")) {
    if (binary_default) outputs = {{"probabilities", 0, true}, {"class_idx", 0, true}};
    return outputs;
  }
  if (!header["outputs"].is_array()) bad("'outputs' must be a list");
  // Two outputs exist; a longer list only multiplies the reply (200,000 entries made a 55 MB one).
  if (header["outputs"].size() > 2) bad("'outputs' names at most the two outputs, probabilities and class_idx");
  for (const auto& o : header["outputs"]) {
    if (!o.is_object() || !o.contains("name") || !o["name"].is_string()) bad("each output needs a 'name'");
    RequestedOutput out{o["name"].get<std::string>(), 0, binary_default};
    if (out.name != "probabilities" && out.name != "class_idx") {
      bad(fmt::format("unknown output '{}'; the outputs are probabilities and class_idx", out.name));
    }
    if (o.contains("parameters") && o["parameters"].is_object()) {
      const json& p = o["parameters"];
      if (p.contains("binary_data")) {
        if (!p["binary_data"].is_boolean()) bad("parameters.binary_data must be true or false");
        out.binary = p["binary_data"].get<bool>();
      }
      if (p.contains("classification")) {
        // Checked as the JSON number it is: 4294967297 read as an int was 1.
        const json& k = p["classification"];
        if (!k.is_number_integer() || k.get<std::int64_t>() < 1 || k.get<std::int64_t>() > 1000000) {
          bad("parameters.classification must be an integer from 1 to 1000000");
        }
        out.classification = static_cast<int>(std::min<std::int64_t>(k.get<std::int64_t>(), classes));
      }
    }
    outputs.push_back(out);
  }
  return outputs;
}

}  // namespace

InferRequest parse_infer(const HttpRequest& request, const ModelMeta& meta, std::size_t max_examples,
                         std::size_t max_values) {
  Parts parts = split_body(request, max_values);
  const json& h = parts.header;
  InferRequest out;
  if (h.contains("id")) {
    if (!h["id"].is_string()) bad("'id' must be a string");
    out.id = h["id"].get<std::string>().substr(0, 256);
  }
  if (!h.contains("inputs") || !h["inputs"].is_array() || h["inputs"].size() != 1) {
    bad("'inputs' must be a list of exactly one tensor (the images)");
  }
  const json& input = h["inputs"][0];
  if (!input.is_object() || !input.contains("name") || !input["name"].is_string()) bad("the input needs a 'name'");
  if (input.contains("datatype") && !input["datatype"].is_string()) bad("the input's 'datatype' must be a string");
  const std::string datatype = input.value("datatype", "");
  if (datatype != "FP32" && datatype != "UINT8") {
    bad(fmt::format("input datatype '{}' is not supported; use FP32 (0..1) or UINT8 (0..255)", datatype));
  }
  const auto shape = parse_shape(input, meta, max_examples);
  const auto expected = static_cast<std::size_t>(shape[0] * shape[1] * shape[2] * shape[3]);
  const bool binary = input.contains("parameters") && input["parameters"].is_object() &&
                      input["parameters"].contains("binary_data_size");
  if (binary) {
    const json& size = input["parameters"]["binary_data_size"];
    if (!size.is_number_unsigned() || size.get<std::size_t>() > parts.binary.size()) {
      bad("binary_data_size must be the number of bytes after the JSON header");
    }
    decode_binary(parts.binary.substr(0, size.get<std::size_t>()), datatype, expected, out.pixels);
  } else {
    if (!input.contains("data")) bad("the input needs 'data' (or binary_data_size with the binary extension)");
    out.pixels.reserve(expected);
    flatten_json(input["data"], datatype, expected, out.pixels);
    if (out.pixels.size() != expected) {
      bad(fmt::format(
          "input 'data' has {} values; shape {} needs {}",
          out.pixels.size() > expected ? fmt::format("more than {}", expected) : std::to_string(out.pixels.size()),
          input["shape"].dump(), expected));
    }
  }
  out.count = shape[0];
  out.outputs = parse_outputs(h, static_cast<int>(meta.class_names.size()));
  return out;
}

namespace {

void append_le(std::string& bytes, const void* value, std::size_t size) {
  bytes.append(static_cast<const char*>(value), size);
}

/// One output tensor, its JSON entry, and its raw bytes when binary.
json output_tensor(const RequestedOutput& o, const PredictResult& r, const ModelMeta& meta, std::string& binary) {
  const auto n = static_cast<std::int64_t>(r.class_idxs.size());
  json entry = {{"name", o.name}};
  std::string bytes;
  json data = json::array();
  if (o.classification > 0) {
    const int k = o.classification;
    entry["datatype"] = "BYTES";
    entry["shape"] = {n, k};
    for (const auto& probs : r.probabilities) {
      std::vector<int> order(probs.size());
      for (std::size_t i = 0; i < order.size(); ++i) order[i] = static_cast<int>(i);
      std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return probs[a] > probs[b]; });
      for (int i = 0; i < k; ++i) {
        const int c = order[static_cast<std::size_t>(i)];
        const std::string label =
            fmt::format("{:.6f}:{}:{}", probs[c], c, meta.class_names[static_cast<std::size_t>(c)]);
        const auto length = static_cast<std::uint32_t>(label.size());
        append_le(bytes, &length, 4);
        bytes += label;
        data.push_back(label);
      }
    }
  } else if (o.name == "probabilities") {
    const auto classes = static_cast<std::int64_t>(meta.class_names.size());
    entry["datatype"] = "FP32";
    entry["shape"] = {n, classes};
    for (const auto& probs : r.probabilities) {
      for (float p : probs) {
        append_le(bytes, &p, 4);
        data.push_back(p);
      }
    }
  } else {
    entry["datatype"] = "INT64";
    entry["shape"] = {n};
    for (int c : r.class_idxs) {
      const std::int64_t v = c;
      append_le(bytes, &v, 8);
      data.push_back(v);
    }
  }
  if (o.binary) {
    entry["parameters"] = {{"binary_data_size", bytes.size()}};
    binary += bytes;
  } else {
    entry["data"] = std::move(data);
  }
  return entry;
}

}  // namespace

HttpReply infer_reply(const InferRequest& request, const PredictResult& result, const ModelMeta& meta) {
  std::vector<RequestedOutput> outputs = request.outputs;
  if (outputs.empty()) outputs = {{"probabilities", 0, false}, {"class_idx", 0, false}};
  json reply = {{"model_name", meta.model_id}, {"model_version", std::to_string(result.version)}};
  if (!request.id.empty()) reply["id"] = request.id;
  std::string binary;
  json tensors = json::array();
  for (const auto& o : outputs) tensors.push_back(output_tensor(o, result, meta, binary));
  reply["outputs"] = std::move(tensors);
  HttpReply out = HttpReply::json(200, reply);
  if (!binary.empty()) {
    out.headers[kHeaderLength] = std::to_string(out.body.size());
    out.body += binary;
    out.content_type = "application/octet-stream";
  }
  return out;
}

json model_metadata(const ModelMeta& meta, const std::vector<int>& versions) {
  json listed = json::array();
  for (int v : versions) listed.push_back(std::to_string(v));
  if (listed.empty()) listed.push_back(std::to_string(meta.version));
  const auto classes = static_cast<std::int64_t>(meta.class_names.size());
  return {
      {"name", meta.model_id},
      {"versions", std::move(listed)},
      {"platform", "pytorch_libtorch"},
      {"inputs", {{{"name", "input"}, {"datatype", "FP32"}, {"shape", {-1, meta.channels, meta.height, meta.width}}}}},
      {"outputs",
       {{{"name", "probabilities"}, {"datatype", "FP32"}, {"shape", {-1, classes}}},
        {{"name", "class_idx"}, {"datatype", "INT64"}, {"shape", {-1}}}}}};
}

json model_config(const ModelMeta& meta, int max_batch_size, int max_queue_delay_us) {
  const auto classes = static_cast<std::int64_t>(meta.class_names.size());
  return {
      {"name", meta.model_id},
      {"platform", "pytorch_libtorch"},
      {"backend", "pytorch"},
      {"max_batch_size", max_batch_size},
      {"input",
       {{{"name", "input"},
         {"data_type", "TYPE_FP32"},
         {"format", "FORMAT_NCHW"},
         {"dims", {meta.channels, meta.height, meta.width}}}}},
      {"output",
       {{{"name", "probabilities"}, {"data_type", "TYPE_FP32"}, {"dims", {classes}}, {"label_filename", ""}},
        {{"name", "class_idx"}, {"data_type", "TYPE_INT64"}, {"dims", {1}}, {"reshape", {{"shape", json::array()}}}}}},
      {"dynamic_batching", {{"max_queue_delay_microseconds", max_queue_delay_us}}},
      {"version_policy", {{"all", json::object()}}}};
}

json server_metadata() {
  return {{"name", "mlswarm"},
          {"version", std::string(mlswarm_version())},
          {"extensions", {"binary_tensor_data", "classification"}}};
}

HttpReply error_reply(int status, const std::string& message) { return HttpReply::json(status, {{"error", message}}); }

HttpReply reshape_error(HttpReply reply) {
  if (reply.status < 400) return reply;
  json body = json::parse(reply.body, nullptr, false);
  if (body.is_object() && body.contains("error") && body["error"].is_object()) {
    reply.body = json{{"error", body["error"].value("message", "error")}}.dump();
    reply.content_type = "application/json";
  }
  return reply;
}

int parse_version(const std::string& text) {
  if (text.empty() || text.size() > 8 || text.find_first_not_of("0123456789") != std::string::npos ||
      std::stoi(text) < 1) {
    bad(fmt::format("version '{}' is not a positive integer", text.substr(0, 32)));
  }
  return std::stoi(text);
}

}  // namespace mlswarm::v2
