#include "mlswarm/job_metrics.h"

#include <map>
#include <string>

namespace mlswarm {

void set_job_gauges(Metrics& metrics, const std::vector<JobRecord>& jobs) {
  metrics.describe("mlswarm_jobs", "gauge", "jobs by state");
  metrics.describe("mlswarm_job_images_per_second", "gauge", "training images per second of each running job");
  std::map<std::string, int> by_state;
  for (JobState s :
       {JobState::kQueued, JobState::kRunning, JobState::kSucceeded, JobState::kFailed, JobState::kCancelled}) {
    by_state[std::string(to_string(s))] = 0;
  }
  metrics.reset("mlswarm_job_images_per_second");
  for (const auto& job : jobs) {
    ++by_state[std::string(to_string(job.state))];
    if (job.state == JobState::kRunning) {
      metrics.set("mlswarm_job_images_per_second",
                  {{"job_id", job.spec.job_id}, {"model_id", job.spec.model_id}, {"trainer", job.trainer}},
                  job.progress.images_per_s);
    }
  }
  for (const auto& [state, n] : by_state) metrics.set("mlswarm_jobs", {{"state", state}}, n);
}

HttpReply metrics_reply() {
  HttpReply reply;
  reply.content_type = "text/plain; version=0.0.4";
  reply.body = Metrics::global().render();
  return reply;
}

}  // namespace mlswarm
