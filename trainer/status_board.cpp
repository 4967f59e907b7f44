#include "status_board.h"

#include <algorithm>

namespace mlswarm {

StatusBoard::StatusBoard(std::size_t max_finished) : max_finished_(max_finished), thread_([this] { run(); }) {}

StatusBoard::~StatusBoard() { stop(); }

std::uint64_t StatusBoard::post(JobUpdate update) {
  if (update.at == 0) update.at = unix_now();
  return queue_.push(std::move(update));
}

void StatusBoard::wait_applied(std::uint64_t seq) {
  std::unique_lock lock(mutex_);
  applied_cv_.wait(lock, [&] { return applied_ >= seq || stopped_; });
}

void StatusBoard::post_and_wait(JobUpdate update) {
  std::uint64_t seq = post(std::move(update));
  if (seq != 0) wait_applied(seq);
}

void StatusBoard::flush() {
  JobUpdate nothing;
  nothing.kind = JobUpdate::Kind::kProgress;  // for no job: applies nothing
  post_and_wait(std::move(nothing));
}

std::vector<JobRecord> StatusBoard::snapshot() const {
  std::lock_guard lock(mutex_);
  std::vector<JobRecord> jobs;
  jobs.reserve(jobs_.size());
  for (const auto& [id, job] : jobs_) jobs.push_back(job);
  std::sort(jobs.begin(), jobs.end(),
            [](const JobRecord& a, const JobRecord& b) { return a.created_at < b.created_at; });
  return jobs;
}

std::optional<JobRecord> StatusBoard::find(const std::string& job_id) const {
  std::lock_guard lock(mutex_);
  auto it = jobs_.find(job_id);
  if (it == jobs_.end()) return std::nullopt;
  return it->second;
}

void StatusBoard::stop() {
  queue_.close();
  if (thread_.joinable()) thread_.join();
}

void StatusBoard::run() {
  while (auto item = queue_.pop()) {
    std::lock_guard lock(mutex_);
    apply(item->second);
    applied_ = item->first;
    applied_cv_.notify_all();
  }
  std::lock_guard lock(mutex_);
  stopped_ = true;
  applied_cv_.notify_all();
}

void StatusBoard::apply(const JobUpdate& u) {
  if (u.kind == JobUpdate::Kind::kSubmitted) {
    jobs_[u.job_id] = u.record;
    jobs_[u.job_id].updated_at = u.at;
  }
  auto it = jobs_.find(u.job_id);
  if (it == jobs_.end()) return;
  JobRecord& job = it->second;
  job.updated_at = u.at;
  switch (u.kind) {
    case JobUpdate::Kind::kSubmitted:
      break;
    case JobUpdate::Kind::kStarted:
      job.state = JobState::kRunning;
      job.started_at = u.at;
      break;
    case JobUpdate::Kind::kProgress:
      job.progress.update(u.progress);
      break;
    case JobUpdate::Kind::kFinished:
      job.state = u.state;
      job.failure = u.failure;
      job.error = u.error;
      job.finished_at = u.at;
      if (u.state == JobState::kSucceeded) job.progress.fraction = 1.0;
      break;
  }
  // Forget the oldest finished jobs beyond the limit.
  std::size_t finished = 0;
  for (const auto& [id, j] : jobs_) finished += is_terminal(j.state) ? 1 : 0;
  while (finished > max_finished_) {
    auto oldest = jobs_.end();
    for (auto j = jobs_.begin(); j != jobs_.end(); ++j) {
      if (is_terminal(j->second.state) &&
          (oldest == jobs_.end() || j->second.finished_at < oldest->second.finished_at)) {
        oldest = j;
      }
    }
    jobs_.erase(oldest);
    --finished;
  }
}

}  // namespace mlswarm
