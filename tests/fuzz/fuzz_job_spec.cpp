// POST /train bodies (controller and trainer) and job records (trainer /status replies, the
// controller's journal lines): JSON text -> parse_json_body -> parse_job_spec /
// job_record_from_json -> to_json. Only mlswarm::Error may come out; anything else is a bug
// that would have become a 500.

#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "mlswarm/error.h"
#include "mlswarm/http.h"
#include "mlswarm/job.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace mlswarm;
  HttpRequest request;
  request.method = "POST";
  request.path = "/train";
  request.headers["content-type"] = "application/json";
  request.body.assign(reinterpret_cast<const char*>(data), size);
  nlohmann::json body;
  try {
    body = parse_json_body(request);
  } catch (const Error&) {
    return 0;
  }
  try {
    JobSpec spec = parse_job_spec(body);
    JobSpec again = parse_job_spec(to_json(spec));  // what we write, we read back
    if (to_json(again) != to_json(spec)) __builtin_trap();
  } catch (const Error&) {
  }
  try {
    JobRecord record = job_record_from_json(body);
    (void)to_json(record, 0.0).dump();
  } catch (const Error&) {
  }
  return 0;
}
