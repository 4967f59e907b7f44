// Replies of trainers (or of hosts that claim to be trainers) read as untrusted input.

#include "trainer_transport.h"

#include <gtest/gtest.h>

#include "discovery.h"
#include "../../../support/error_code.h"
#include "mlswarm/error.h"
#include "mlswarm/signing.h"

namespace mlswarm {
namespace {

ErrorCode code_of(const std::string& body) {
  return testing::thrown_code([&] { parse_trainer_report(body); });  // kInternal: parsed
}

TEST(TrainerReport, ParsesWhatATrainerSends) {
  TrainerReport r = parse_trainer_report(R"({"trainer": {"address": "a", "capacity": 2, "running": 1, "queued": 0,
      "draining": true}, "jobs": [{"job_id": "j1", "model_id": "m", "state": "running", "attempts": 3,
      "spec": {"model_id": "m", "job_id": "j1"}, "failure": null}]})");
  EXPECT_EQ(r.capacity, 2);
  EXPECT_TRUE(r.draining);
  ASSERT_EQ(r.jobs.size(), 1u);
  EXPECT_EQ(r.jobs[0].spec.attempt, 3);
}

TEST(TrainerReport, WrongTypesAndShapesAreDataErrorsNeverAnotherException) {
  for (const char* body :
       {"", "not json", "[]", "{}", R"({"trainer": 1, "jobs": []})", R"({"trainer": {}, "jobs": {}})",
        R"({"trainer": {"capacity": "2"}, "jobs": []})", R"({"trainer": {"capacity": -1}, "jobs": []})",
        R"({"trainer": {"capacity": 1e300}, "jobs": []})", R"({"trainer": {"draining": "yes"}, "jobs": []})",
        R"({"trainer": {}, "jobs": [1]})", R"({"trainer": {}, "jobs": [{"state": "running"}]})",
        R"({"trainer": {}, "jobs": [{"spec": {}, "state": "exploded"}]})",
        R"({"trainer": {}, "jobs": [{"spec": {}, "state": "running", "attempts": 1e12}]})",
        R"({"trainer": {}, "jobs": [{"spec": {}, "state": "running", "progress": "half"}]})"}) {
    EXPECT_EQ(code_of(body), ErrorCode::kDataError) << body;
  }
  std::string deep = std::string(100, '[') + std::string(100, ']');
  EXPECT_EQ(code_of(deep), ErrorCode::kDataError);
}

TEST(TrainerReport, PeerErrorTextNeverThrowsAndStaysShort) {
  EXPECT_EQ(peer_error_text({400, "{}", ""}), "400 a reply without an error message");
  EXPECT_EQ(peer_error_text({400, R"({"error": {"message": "bad"}})", ""}), "400 bad");
  EXPECT_EQ(peer_error_text({200, "<html>", ""}), "200 a reply that is not JSON");
  EXPECT_EQ(peer_error_text({-1, "", "reply: no answer within 1000 ms"}), "reply: no answer within 1000 ms");
  EXPECT_LT(peer_error_text({500, R"({"error": {"message": ")" + std::string(5000, 'x') + R"("}})", ""}).size(), 220u);
}

TEST(ProbeReply, ATrainerIsTrustedOnlyWithTheProof) {
  EXPECT_FALSE(judge_probe_reply(200, R"({"type": "controller"})", "").trainer);
  EXPECT_FALSE(judge_probe_reply(404, R"({"type": "train"})", "").trainer);
  EXPECT_FALSE(judge_probe_reply(200, R"({"type": ["train"]})", "").trainer);
  EXPECT_TRUE(judge_probe_reply(200, R"({"type": "train"})", "").trusted) << "no key: every trainer";
  const std::string proof = challenge_proof("k", "00112233445566778899aabbccddeeff", "10.0.0.2:48516");
  EXPECT_FALSE(judge_probe_reply(200, R"({"type": "train"})", proof).trusted);
  EXPECT_FALSE(judge_probe_reply(200, R"({"type": "train", "proof": 7})", proof).trusted);
  EXPECT_FALSE(judge_probe_reply(200, R"({"type": "train", "proof": "00"})", proof).trusted);
  auto v = judge_probe_reply(200, R"({"type": "train", "proof": ")" + proof + "\"}", proof);
  EXPECT_TRUE(v.trainer);
  EXPECT_TRUE(v.trusted);
}

}  // namespace
}  // namespace mlswarm
