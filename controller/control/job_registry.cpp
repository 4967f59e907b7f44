#include "job_registry.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "mlswarm/atomic_file.h"
#include "mlswarm/error.h"
#include "mlswarm/ids.h"
#include "mlswarm/json_fields.h"
#include "mlswarm/log.h"

namespace mlswarm {
namespace {

constexpr double kProgressJournalSeconds = 5.0;

}  // namespace

JobRegistry::JobRegistry(std::filesystem::path dir, bool writer)
    : dir_(std::move(dir)), journal_path_(dir_ / "jobs.jsonl") {
  std::error_code ec;
  std::filesystem::create_directories(dir_, ec);
  if (ec) throw Error(ErrorCode::kInternal, fmt::format("cannot create {}: {}", dir_.string(), ec.message()));
  std::lock_guard lock(write_mutex_);
  read_journal();
  if (!jobs_.empty()) spdlog::info("job registry: {} jobs loaded from {}", jobs_.size(), journal_path_.string());
  if (writer) compact();
}

JobRegistry::~JobRegistry() {
  if (journal_fd_ >= 0) ::close(journal_fd_);
}

void JobRegistry::set_fence(std::function<bool(const std::function<void()>&)> fence,
                            std::function<std::uint64_t()> term) {
  std::lock_guard lock(write_mutex_);
  fence_ = std::move(fence);
  term_ = std::move(term);
}

void JobRegistry::refresh() {
  std::lock_guard lock(write_mutex_);
  if (journal_fd_ < 0) read_journal();  // a writer's journal is its own
}

void JobRegistry::start_writing() {
  std::lock_guard lock(write_mutex_);
  auto open_and_compact = [&] {
    read_journal();  // what the last leader appended before it went
    compact();
  };
  if (!fence_) return open_and_compact();
  if (!fence_(open_and_compact)) throw Error(ErrorCode::kUnavailable, "this controller does not lead");
}

void JobRegistry::stop_writing() {
  std::lock_guard lock(write_mutex_);
  if (journal_fd_ >= 0) ::close(journal_fd_);
  journal_fd_ = -1;
}

void JobRegistry::read_journal() {
  const int fd = ::open(journal_path_.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return;
  struct stat st {};
  ::fstat(fd, &st);
  if (st.st_ino != journal_inode_ || st.st_size < read_offset_) {
    // A new file (compacted by the leader) or a shorter one: read it all again.
    std::lock_guard lock(mutex_);
    jobs_.clear();
    order_.clear();
    documents_.clear();
    document_order_.clear();
    ++documents_generation_;
    read_offset_ = 0;
    max_term_ = 0;
    journal_inode_ = st.st_ino;
  }
  std::string text(static_cast<std::size_t>(std::max<off_t>(0, st.st_size - read_offset_)), '\0');
  const ssize_t n = ::pread(fd, text.data(), text.size(), read_offset_);
  ::close(fd);
  text.resize(n > 0 ? static_cast<std::size_t>(n) : 0);
  // Whole lines only: the leader may be halfway through one (and a torn last line of a crash
  // is never completed; the next record starts after it).
  const std::size_t end = text.rfind('\n');
  if (end == std::string::npos) return;
  for (std::size_t start = 0; start <= end;) {
    const std::size_t stop = text.find('\n', start);
    const std::string_view line(text.data() + start, stop - start);
    start = stop + 1;
    if (line.empty()) continue;
    try {
      const auto j = nlohmann::json::parse(line);
      const auto term = static_cast<std::uint64_t>(checked_int_or(j, "term", 0, 0, std::int64_t{1} << 53));
      if (j.contains("document")) {
        apply_document(j, term);
      } else {
        apply(job_record_from_json(j), term);
      }
    } catch (const std::exception& e) {
      spdlog::warn("{}: skipped an unreadable journal line ({})", journal_path_.string(), e.what());
    }
  }
  read_offset_ += static_cast<off_t>(end + 1);
}

void JobRegistry::apply(JobRecord job, std::uint64_t term) {
  // A record of a lower term after a newer leader's is a stale leader's: its change to a job
  // the newer leader knows is not applied. A job it created is kept: a client got 202 for it,
  // and no newer leader decided anything about a job it never saw.
  const bool known = jobs_.contains(job.spec.job_id);
  if (term < max_term_ && known) return;
  max_term_ = std::max(max_term_, term);
  std::lock_guard lock(mutex_);
  if (!known) order_.push_back(job.spec.job_id);
  jobs_[job.spec.job_id] = std::move(job);
}

void JobRegistry::apply_document(const nlohmann::json& line, std::uint64_t term) {
  const std::string kind = line.at("document").get<std::string>();
  const std::string id = line.at("id").get<std::string>();
  if (!line.at("body").is_object()) throw Error(ErrorCode::kDataError, "a document's body must be an object");
  const std::string key = kind + "/" + id;
  const bool known = documents_.contains(key);
  if (term < max_term_ && known) return;  // a stale leader's, as for jobs
  max_term_ = std::max(max_term_, term);
  std::lock_guard lock(mutex_);
  if (!known) document_order_.push_back(key);
  documents_[key] = {{"document", kind}, {"id", id}, {"body", line.at("body")}};
  ++documents_generation_;
}

void JobRegistry::compact() {
  const std::uint64_t term = term_ ? term_() : 0;
  std::string text;
  for (const auto& id : order_) {
    nlohmann::json line = to_json(jobs_.at(id), unix_now());
    line["term"] = term;
    text += line.dump() + "\n";
  }
  for (const auto& key : document_order_) {
    nlohmann::json line = documents_.at(key);
    line["term"] = term;
    text += line.dump() + "\n";
  }
  write_file_atomic(journal_path_, text);
  if (journal_fd_ >= 0) ::close(journal_fd_);
  journal_fd_ = ::open(journal_path_.c_str(), O_WRONLY | O_APPEND | O_CLOEXEC);
  if (journal_fd_ < 0) {
    throw Error(ErrorCode::kInternal, fmt::format("cannot open {} for appending", journal_path_.string()));
  }
  struct stat st {};
  ::fstat(journal_fd_, &st);
  journal_inode_ = st.st_ino;
  read_offset_ = st.st_size;
  max_term_ = std::max(max_term_, term);
  lines_ = order_.size() + document_order_.size();
}

void JobRegistry::append(const JobRecord& job) {
  append_line(to_json(job, unix_now()));
  journaled_at_[job.spec.job_id] = unix_now();
}

void JobRegistry::append_line(const nlohmann::json& record) {
  if (journal_fd_ < 0) throw Error(ErrorCode::kUnavailable, "this controller does not lead; the change was not made");
  if (!fence_) return write_line(record);
  if (!fence_([&] { write_line(record); })) {
    throw Error(ErrorCode::kUnavailable, "this controller no longer leads; the change was not made");
  }
}

void JobRegistry::write_line(nlohmann::json record) {
  const std::uint64_t term = term_ ? term_() : 0;
  record["term"] = term;
  const std::string line = record.dump() + "\n";
  // The file this controller appends to must still be the journal: one that another leader
  // compacted (renamed a new file over it) is gone, and an append there would be lost.
  struct stat open_file {};
  struct stat on_disk {};
  if (::fstat(journal_fd_, &open_file) != 0 || ::stat(journal_path_.c_str(), &on_disk) != 0 ||
      open_file.st_ino != on_disk.st_ino || open_file.st_dev != on_disk.st_dev) {
    throw Error(ErrorCode::kUnavailable,
                fmt::format("the job journal {} was replaced by another controller; nothing was changed",
                            journal_path_.string()));
  }
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
  read_offset_ = size_before + static_cast<off_t>(line.size());
  max_term_ = std::max(max_term_, term);
  if (++lines_ > 4 * (order_.size() + document_order_.size()) + 1000) {
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

std::optional<JobRecord> JobRegistry::update(const std::string& job_id, const std::function<void(JobRecord&)>& change,
                                             bool durable) {
  return update_if(
      job_id, [](const JobRecord&) { return true; }, change, durable);
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

void JobRegistry::create_document(const std::string& kind, const std::string& id, const nlohmann::json& body) {
  std::lock_guard writer(write_mutex_);
  const std::string key = kind + "/" + id;
  if (documents_.contains(key))
    throw Error(ErrorCode::kConflict, fmt::format("{} '{}' already exists", kind, id), "id");
  nlohmann::json line = {{"document", kind}, {"id", id}, {"body", body}};
  append_line(line);  // durable before it is visible
  std::lock_guard lock(mutex_);
  document_order_.push_back(key);
  documents_[key] = std::move(line);
  ++documents_generation_;
}

std::optional<nlohmann::json> JobRegistry::update_document(const std::string& kind, const std::string& id,
                                                           const std::function<bool(nlohmann::json&)>& change) {
  std::lock_guard writer(write_mutex_);  // documents_ may be read here: only writers change it
  auto it = documents_.find(kind + "/" + id);
  if (it == documents_.end()) return std::nullopt;
  nlohmann::json body = it->second.at("body");
  if (!change(body)) return it->second.at("body");
  nlohmann::json line = {{"document", kind}, {"id", id}, {"body", body}};
  append_line(line);
  std::lock_guard lock(mutex_);
  it->second = std::move(line);
  ++documents_generation_;
  return body;
}

std::optional<nlohmann::json> JobRegistry::find_document(const std::string& kind, const std::string& id) const {
  std::lock_guard lock(mutex_);
  auto it = documents_.find(kind + "/" + id);
  if (it == documents_.end()) return std::nullopt;
  return it->second.at("body");
}

std::vector<nlohmann::json> JobRegistry::documents(const std::string& kind) const {
  std::lock_guard lock(mutex_);
  std::vector<nlohmann::json> out;
  for (const auto& key : document_order_) {
    const auto& line = documents_.at(key);
    if (line.at("document") == kind) out.push_back(line.at("body"));
  }
  return out;
}

std::uint64_t JobRegistry::max_term() const {
  std::lock_guard lock(write_mutex_);
  return max_term_;
}

std::size_t JobRegistry::journal_lines() const {
  std::lock_guard writer(write_mutex_);
  return lines_;
}

}  // namespace mlswarm
