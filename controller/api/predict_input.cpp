#include "predict_input.h"

#include <charconv>
#include <cmath>
#include <iterator>

#include <fmt/format.h>

#include "mlswarm/error.h"

namespace mlswarm {

using nlohmann::json;

namespace {

/// Appends the numbers of one example, depth-first, checking each.
void flatten_into(const json& value, std::vector<float>& out, std::size_t example, std::size_t limit) {
  if (value.is_array()) {
    for (const auto& v : value) {
      flatten_into(v, out, example, limit);
      if (out.size() > limit) return;
    }
    return;
  }
  if (!value.is_number()) {
    throw Error(ErrorCode::kInvalidArgument, fmt::format("examples[{}] holds a non-number", example), "examples");
  }
  double x = value.get<double>();
  if (!std::isfinite(x) || x < 0.0 || x > 1.0) {
    throw Error(ErrorCode::kInvalidArgument,
                fmt::format("examples[{}] holds {}; pixel intensities must be in 0..1", example, x), "examples");
  }
  out.push_back(static_cast<float>(x));
}

}  // namespace

std::vector<float> flatten_examples(const json& examples, const ModelMeta& meta, std::size_t max_examples) {
  if (!examples.is_array()) throw Error(ErrorCode::kInvalidArgument, "examples must be a list", "examples");
  if (examples.empty()) throw Error(ErrorCode::kInvalidArgument, "examples is empty", "examples");
  if (examples.size() > max_examples) {
    throw Error(ErrorCode::kPayloadTooLarge,
                fmt::format("{} examples in one request; the limit is {}", examples.size(), max_examples), "examples");
  }
  const std::size_t chw = static_cast<std::size_t>(meta.channels) * meta.height * meta.width;
  std::vector<float> out;
  out.reserve(examples.size() * chw);
  for (std::size_t i = 0; i < examples.size(); ++i) {
    std::size_t before = out.size();
    flatten_into(examples[i], out, i, before + chw);
    if (out.size() - before != chw) {
      throw Error(ErrorCode::kInvalidArgument,
                  fmt::format("examples[{}] has {} values; model {} takes [{}][{}][{}] = {}", i,
                              out.size() - before > chw ? fmt::format("more than {}", chw)
                                                        : std::to_string(out.size() - before),
                              meta.model_id, meta.channels, meta.height, meta.width, chw),
                  "examples");
    }
  }
  return out;
}

namespace {

/// A cursor over a /predict body for scan_predict_body; every method returns false (or
/// nullopt) for what the fast path does not take.
class Scanner {
 public:
  explicit Scanner(std::string_view text) : p_(text.data()), end_(text.data() + text.size()) {}

  void skip_ws() {
    while (p_ < end_ && (*p_ == ' ' || *p_ == '\n' || *p_ == '\r' || *p_ == '\t')) ++p_;
  }
  bool eat(char c) {
    skip_ws();
    if (p_ == end_ || *p_ != c) return false;
    ++p_;
    return true;
  }
  bool at_end() {
    skip_ws();
    return p_ == end_;
  }
  char peek() {
    skip_ws();
    return p_ == end_ ? '\0' : *p_;
  }

  /// A string without escapes or control characters (those take the full parser).
  std::optional<std::string_view> plain_string() {
    if (!eat('"')) return std::nullopt;
    const char* start = p_;
    while (p_ < end_ && *p_ != '"') {
      if (*p_ == '\\' || static_cast<unsigned char>(*p_) < 0x20) return std::nullopt;
      ++p_;
    }
    if (p_ == end_) return std::nullopt;
    return std::string_view(start, static_cast<std::size_t>(p_++ - start));
  }

  /// A JSON number token (RFC 8259 grammar); `integral` says it had no fraction or exponent.
  std::optional<std::string_view> number_token(bool& integral) {
    skip_ws();
    const char* start = p_;
    if (p_ < end_ && *p_ == '-') ++p_;
    if (p_ == end_ || !is_digit(*p_)) return std::nullopt;
    if (*p_ == '0') {
      ++p_;
    } else {
      while (p_ < end_ && is_digit(*p_)) ++p_;
    }
    integral = true;
    if (p_ < end_ && *p_ == '.') {
      integral = false;
      if (++p_ == end_ || !is_digit(*p_)) return std::nullopt;
      while (p_ < end_ && is_digit(*p_)) ++p_;
    }
    if (p_ < end_ && (*p_ == 'e' || *p_ == 'E')) {
      integral = false;
      ++p_;
      if (p_ < end_ && (*p_ == '+' || *p_ == '-')) ++p_;
      if (p_ == end_ || !is_digit(*p_)) return std::nullopt;
      while (p_ < end_ && is_digit(*p_)) ++p_;
    }
    return std::string_view(start, static_cast<std::size_t>(p_ - start));
  }

  /// A pixel intensity: a number in 0..1, read as a double and then narrowed, as the JSON
  /// parser and flatten_examples do.
  bool pixel(std::vector<float>& out) {
    skip_ws();
    // Most pixels are "0", "1" or "0." and a few digits: their fraction digits as an integer,
    // divided by the exact power of ten, is one IEEE division of two exact doubles, so the
    // correctly rounded double from_chars returns (Clinger's fast path; numerator < 2^53).
    // Anything else (exponents, more digits, a sign, bad syntax) goes the general way below.
    if (p_ < end_ && (*p_ == '0' || *p_ == '1')) {
      const char* p = p_ + 1;
      std::uint64_t digits = static_cast<std::uint64_t>(*p_ - '0');
      int fraction = 0;
      if (p < end_ && *p == '.') {
        ++p;
        while (p < end_ && is_digit(*p) && fraction < kFastDigits) {
          digits = digits * 10 + static_cast<std::uint64_t>(*p++ - '0');
          ++fraction;
        }
      }
      const bool token_ends = p == end_ || !(is_digit(*p) || *p == '.' || *p == 'e' || *p == 'E');
      if (token_ends && (fraction > 0 || p == p_ + 1)) {
        const double x = static_cast<double>(digits) / kPow10[fraction];
        if (x <= 1.0) {
          out.push_back(static_cast<float>(x));
          p_ = p;
          return true;
        }
      }
    }
    bool integral = false;
    auto token = number_token(integral);
    if (!token) return false;
    double x = 0;
    auto [next, ec] = std::from_chars(token->data(), token->data() + token->size(), x);
    if (ec != std::errc() || next != token->data() + token->size()) return false;
    if (!(x >= 0.0 && x <= 1.0)) return false;  // also NaN
    out.push_back(static_cast<float>(x));
    return true;
  }

  bool literal(std::string_view word) {
    skip_ws();
    if (static_cast<std::size_t>(end_ - p_) < word.size() || std::string_view(p_, word.size()) != word) return false;
    p_ += word.size();
    return true;
  }

 private:
  static bool is_digit(char c) { return c >= '0' && c <= '9'; }
  static constexpr int kFastDigits = 15;
  static constexpr double kPow10[kFastDigits + 1] = {1e0, 1e1, 1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                                                     1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15};
  const char* p_;
  const char* end_;
};

/// The numbers of one example, depth-first: a number, or an array of them nested at most
/// `depth_left` deep.
bool scan_example(Scanner& in, std::vector<float>& out, int depth_left, std::size_t max_values) {
  if (in.peek() != '[') return in.pixel(out) && out.size() <= max_values;
  if (depth_left <= 0) return false;
  in.eat('[');
  if (in.eat(']')) return true;
  do {
    if (!scan_example(in, out, depth_left - 1, max_values)) return false;
  } while (in.eat(','));
  return in.eat(']');
}

bool scan_examples(Scanner& in, ScannedPredict& out, std::size_t max_examples, int depth_left, std::size_t max_values) {
  if (!in.eat('[') || depth_left <= 0) return false;
  if (in.eat(']')) return false;  // empty: the full parser says so
  do {
    if (out.sizes.size() == max_examples) return false;
    const std::size_t before = out.pixels.size();
    if (!scan_example(in, out.pixels, depth_left - 1, max_values)) return false;
    out.sizes.push_back(static_cast<std::uint32_t>(out.pixels.size() - before));
  } while (in.eat(','));
  return in.eat(']');
}

bool scan_version(Scanner& in, int& version) {
  if (in.literal("null")) return true;
  bool integral = false;
  auto token = in.number_token(integral);
  if (!token || !integral) return false;
  std::int64_t v = 0;
  auto [next, ec] = std::from_chars(token->data(), token->data() + token->size(), v);
  if (ec != std::errc() || next != token->data() + token->size() || v < 1 || v > 99999999) return false;
  version = static_cast<int>(v);
  return true;
}

}  // namespace

std::optional<ScannedPredict> scan_predict_body(std::string_view body, std::size_t max_examples, int max_depth,
                                                std::size_t max_values, bool* too_many) {
  ScannedPredict out;
  Scanner in(body);
  bool has_model = false, has_examples = false, has_version = false;
  if (!in.eat('{')) return std::nullopt;
  do {
    auto key = in.plain_string();
    if (!key || !in.eat(':')) return std::nullopt;
    if (*key == "model_id" && !has_model) {
      auto id = in.plain_string();
      if (!id) return std::nullopt;
      out.model_id = *id;
      has_model = true;
    } else if (*key == "examples" && !has_examples) {
      out.pixels.reserve(std::min(body.size() / 4, max_values));
      if (!scan_examples(in, out, max_examples, max_depth - 1, max_values)) {
        if (too_many != nullptr) *too_many = out.pixels.size() > max_values;
        return std::nullopt;
      }
      has_examples = true;
    } else if (*key == "version" && !has_version) {
      if (!scan_version(in, out.version)) return std::nullopt;
      has_version = true;
    } else {
      return std::nullopt;
    }
  } while (in.eat(','));
  if (!in.eat('}') || !in.at_end() || !has_model || !has_examples) return std::nullopt;
  return out;
}

std::string predict_reply_json(const PredictResult& result, const std::string& deployment, const std::string& variant) {
  fmt::memory_buffer out;
  auto quoted = [&](const std::string& text) {
    const std::string dumped = json(text).dump(-1, ' ', false, json::error_handler_t::replace);
    out.append(dumped.data(), dumped.data() + dumped.size());
  };
  out.append(std::string_view(R"({"model_id":)"));
  quoted(result.model_id);
  fmt::format_to(std::back_inserter(out), R"(,"version":{},"class_idxs":[{}],"class_tags":[)", result.version,
                 fmt::join(result.class_idxs, ","));
  for (std::size_t i = 0; i < result.class_tags.size(); ++i) {
    if (i > 0) out.push_back(',');
    quoted(result.class_tags[i]);
  }
  out.append(std::string_view(R"(],"probabilities":[)"));
  for (std::size_t i = 0; i < result.probabilities.size(); ++i) {
    out.append(std::string_view(i > 0 ? ",[" : "["));
    for (std::size_t j = 0; j < result.probabilities[i].size(); ++j) {
      if (j > 0) out.push_back(',');
      const float p = result.probabilities[i][j];
      if (std::isfinite(p)) {
        fmt::format_to(std::back_inserter(out), "{}", p);
      } else {
        out.append(std::string_view("null"));  // as the JSON library writes a NaN
      }
    }
    out.push_back(']');
  }
  out.push_back(']');
  if (!deployment.empty()) {
    out.append(std::string_view(R"(,"deployment":)"));
    quoted(deployment);
    out.append(std::string_view(R"(,"variant":)"));
    quoted(variant);
  }
  out.append(std::string_view("}\n"));
  return fmt::to_string(out);
}

}  // namespace mlswarm
