#pragma once

#include <vector>

#include "mlswarm/http.h"
#include "mlswarm/job.h"
#include "mlswarm/metrics.h"

namespace mlswarm {

/// Sets `mlswarm_jobs{state}` (every state, zeros included) and
/// `mlswarm_job_images_per_second{job_id,model_id,trainer}` for the running jobs.
/// For a Metrics collector; both daemons use it over their own job tables.
void set_job_gauges(Metrics& metrics, const std::vector<JobRecord>& jobs);

/// GET /metrics: the global registry rendered as Prometheus text.
HttpReply metrics_reply();

}  // namespace mlswarm
