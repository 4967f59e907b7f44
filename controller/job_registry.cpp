#include "job_registry.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <fstream>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "mlswarm/atomic_file.h"
#include "mlswarm/error.h"
#include "mlswarm/ids.h"
#include "mlswarm/log.h"

namespace mlswarm {
namespace {

constexpr double kProgressJournalSeconds = 5.0;

}  // namespace

JobRegistry::JobRegistry(std::filesystem::path dir) : dir_(std::move(dir)), journal_path_(dir_ / "jobs.jsonl") {
  std::error_code ec;
  std::filesystem::create_directories(dir_, ec);
  if (ec) throw Error(ErrorCode::kInternal, fmt::format("cannot create {}: {}", dir_.string(), ec.message()));
  load();
  compact();
}

JobRegistry::~JobRegistry() {
  if (journal_fd_ >= 0) ::close(journal_fd_);
}

void JobRegistry::load() {
  std::ifstream in(journal_path_);
  std::string line;
  std::size_t number = 0, skipped = 0;
  while (std::getline(in, line)) {
    ++number;
    if (line.empty()) continue;
    try {
      JobRecord job = job_record_from_json(nlohmann::json::parse(line));
      if (!jobs_.contains(job.spec.job_id)) order_.push_back(job.spec.job_id);
      jobs_[job.spec.job_id] = std::move(job);
    } catch (const std::exception& e) {
      ++skipped;
      spdlog::warn("{}:{}: skipped an unreadable journal line ({})", journal_path_.string(), number, e.what());
    }
  }
  if (!jobs_.empty() || skipped > 0) {
    spdlog::info("job registry: {} jobs loaded from {} ({} lines, {} skipped)", jobs_.size(),
                 journal_path_.string(), number, skipped);
  }
}

void JobRegistry::compact() {
  std::string text;
  for (const auto& id : order_) text += to_json(jobs_.at(id), unix_now()).dump() + "\n";
  write_file_atomic(journal_path_, text);
  if (journal_fd_ >= 0) ::close(journal_fd_);
  journal_fd_ = ::open(journal_path_.c_str(), O_WRONLY | O_APPEND | O_CLOEXEC);
  if (journal_fd_ < 0) {
    throw Error(ErrorCode::kInternal, fmt::format("cannot open {} for appending", journal_path_.string()));
  }
  lines_ = order_.size();
}

void JobRegistry::append(const JobRecord& job) {
  const std::string line = to_json(job, unix_now()).dump() + "\n";
  const off_t size_before = ::lseek(journal_fd_, 0, SEEK_END);
  std::size_t written = 0;
  int error = 0;
  while (written < line.size()) {
    const ssize_t n = ::write(journal_fd_, line.data() + written, line.size() - written);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      error = n < 0 ? errno : ENOSPC;
      break;
    }
    written += static_cast<std::size_t>(n);
  }
  if (error == 0 && ::fsync(journal_fd_) != 0) error = errno;
  if (error != 0) {
    // Cut a partial record off again so the journal stays whole lines; the change is not made.
    if (size_before >= 0 && ::ftruncate(journal_fd_, size_before) == 0) ::fsync(journal_fd_);
    throw Error(ErrorCode::kUnavailable, fmt::format("cannot write the job journal {}: {}; nothing was changed",
                                                     journal_path_.string(), std::strerror(error)));
  }
  journaled_at_[job.spec.job_id] = unix_now();
  if (++lines_ > 4 * order_.size() + 1000) {
    try {
      compact();
    } catch (const Error& e) {
      // The record is already appended; compaction can wait for the next one.
      spdlog::warn("job journal not compacted: {}", e.what());
    }
  }
}

JobRecord JobRegistry::create(JobSpec spec, std::size_t max_queued) {
  std::lock_guard writer(write_mutex_);  // jobs_ may be read here: only writers change it
  if (spec.job_id.empty()) {
    do {
      spec.job_id = make_id("job");
    } while (jobs_.contains(spec.job_id));
  } else if (jobs_.contains(spec.job_id)) {
    throw Error(ErrorCode::kConflict, fmt::format("job '{}' already exists", spec.job_id), "job_id");
  }
  if (spec.model_id.empty()) spec.model_id = spec.job_id;
  std::size_t queued = 0;
  for (const auto& [id, job] : jobs_) queued += job.state == JobState::kQueued ? 1 : 0;
  if (queued >= max_queued) {
    throw Error(ErrorCode::kTooManyRequests, fmt::format("{} jobs are already queued; try again later", queued));
  }
  JobRecord job;
  job.spec = std::move(spec);
  job.spec.attempt = 0;  // no dispatch yet
  job.state = JobState::kQueued;
  job.created_at = unix_now();
  job.updated_at = job.created_at;
  job.request_id = log_field("request_id");
  append(job);  // durable before it is visible
  std::lock_guard lock(mutex_);
  order_.push_back(job.spec.job_id);
  jobs_[job.spec.job_id] = job;
  return job;
}

std::optional<JobRecord> JobRegistry::find(const std::string& job_id) const {
  std::lock_guard lock(mutex_);
  auto it = jobs_.find(job_id);
  if (it == jobs_.end()) return std::nullopt;
  return it->second;
}

std::vector<JobRecord> JobRegistry::list() const {
  std::lock_guard lock(mutex_);
  std::vector<JobRecord> out;
  out.reserve(order_.size());
  for (const auto& id : order_) out.push_back(jobs_.at(id));
  return out;
}

std::optional<JobRecord> JobRegistry::update(const std::string& job_id,
                                             const std::function<void(JobRecord&)>& change, bool durable) {
  return update_if(job_id, [](const JobRecord&) { return true; }, change, durable);
}

std::optional<JobRecord> JobRegistry::update_if(const std::string& job_id,
                                                const std::function<bool(const JobRecord&)>& expected,
                                                const std::function<void(JobRecord&)>& change, bool durable) {
  std::lock_guard writer(write_mutex_);  // jobs_ may be read here: only writers change it
  auto it = jobs_.find(job_id);
  if (it == jobs_.end() || !expected(it->second)) return std::nullopt;
  JobRecord next = it->second;
  change(next);
  next.updated_at = unix_now();
  bool stale = next.updated_at - journaled_at_[job_id] > kProgressJournalSeconds;
  if (durable || stale) append(next);  // durable before it is visible; readers do not wait for it
  std::lock_guard lock(mutex_);
  it->second = next;
  return next;
}

std::size_t JobRegistry::journal_lines() const {
  std::lock_guard writer(write_mutex_);
  return lines_;
}

}  // namespace mlswarm
