// What a trainer, or any host on the trainers' subnet that claims to be one, sends the
// controller: a /status body (parse_trainer_report: checked accessors, nothing but
// Error(kDataError) may come out), a discovery answer (judge_probe_reply) and an error reply
// (peer_error_text, which never throws).

#include <cstdint>
#include <string>

#include "discovery.h"
#include "mlswarm/error.h"
#include "trainer_transport.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace mlswarm;
  const std::string body(reinterpret_cast<const char*>(data), size);
  try {
    TrainerReport report = parse_trainer_report(body);
    if (report.capacity < 0 || report.capacity > 4096) __builtin_trap();
    for (const auto& job : report.jobs) {
      if (job.spec.attempt < 0 || job.spec.attempt > kMaxAttempt) __builtin_trap();
    }
  } catch (const Error& e) {
    if (e.code() != ErrorCode::kDataError) __builtin_trap();
  }
  const ProbeVerdict open = judge_probe_reply(200, body, "");
  const ProbeVerdict keyed = judge_probe_reply(200, body, std::string(64, 'a'));
  if (keyed.trusted && !open.trainer) __builtin_trap();
  const std::string text = peer_error_text(HttpCallResult{400, body, ""});
  if (text.size() > 220) __builtin_trap();
  return 0;
}
