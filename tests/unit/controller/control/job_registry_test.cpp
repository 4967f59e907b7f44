#include "job_registry.h"

#include <gtest/gtest.h>

#include <sys/resource.h>

#include <csignal>
#include <fstream>

#include "../../../support/temp_dir.h"
#include "mlswarm/error.h"

namespace mlswarm {
namespace {

using testing::TempDir;

JobSpec spec(const std::string& model_id, const std::string& job_id = "") {
  JobSpec s;
  s.model_id = model_id;
  s.job_id = job_id;
  s.train_opts.epochs = 2;
  return s;
}

TEST(JobRegistry, AssignsIdsAndRefusesDuplicates) {
  TempDir dir;
  JobRegistry registry(dir.path());
  JobRecord a = registry.create(spec("m"), 10);
  EXPECT_FALSE(a.spec.job_id.empty());
  EXPECT_EQ(a.state, JobState::kQueued);
  JobRecord b = registry.create(JobSpec{}, 10);
  EXPECT_EQ(b.spec.model_id, b.spec.job_id) << "a missing model_id defaults to the job id";
  registry.create(spec("m2", "fixed"), 10);
  EXPECT_THROW(registry.create(spec("m3", "fixed"), 10), Error);
  EXPECT_EQ(registry.list().size(), 3u);
}

TEST(JobRegistry, BoundsTheQueue) {
  TempDir dir;
  JobRegistry registry(dir.path());
  registry.create(spec("a"), 2);
  registry.create(spec("b"), 2);
  try {
    registry.create(spec("c"), 2);
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kTooManyRequests);
  }
}

TEST(JobRegistry, AReloadedRegistryKnowsEveryJobAndItsLastState) {
  TempDir dir;
  std::string running_id, done_id;
  {
    JobRegistry registry(dir.path());
    running_id = registry.create(spec("a"), 10).spec.job_id;
    done_id = registry.create(spec("b"), 10).spec.job_id;
    registry.create(spec("c"), 10);
    registry.update(
        running_id,
        [](JobRecord& j) {
          j.state = JobState::kRunning;
          j.trainer = "10.0.0.2:48516";
          j.spec.attempt = 1;
        },
        true);
    registry.update(
        done_id,
        [](JobRecord& j) {
          j.state = JobState::kSucceeded;
          j.progress.accuracy = 0.9;
        },
        true);
  }
  JobRegistry reloaded(dir.path());
  auto jobs = reloaded.list();
  ASSERT_EQ(jobs.size(), 3u);
  EXPECT_EQ(jobs[0].spec.job_id, running_id) << "submission order is kept";
  EXPECT_EQ(jobs[0].state, JobState::kRunning);
  EXPECT_EQ(jobs[0].trainer, "10.0.0.2:48516");
  EXPECT_EQ(jobs[0].spec.attempt, 1);
  EXPECT_EQ(jobs[0].spec.train_opts.epochs, 2);
  EXPECT_EQ(reloaded.find(done_id)->state, JobState::kSucceeded);
  EXPECT_DOUBLE_EQ(*reloaded.find(done_id)->progress.accuracy, 0.9);
  EXPECT_EQ(reloaded.journal_lines(), 3u) << "loading compacts the journal to one line per job";
}

TEST(JobRegistry, ATornLastLineIsSkipped) {
  TempDir dir;
  std::string id;
  {
    JobRegistry registry(dir.path());
    id = registry.create(spec("a"), 10).spec.job_id;
  }
  std::ofstream(dir / "jobs.jsonl", std::ios::app) << R"({"job_id": "half-writ)";
  JobRegistry reloaded(dir.path());
  ASSERT_EQ(reloaded.list().size(), 1u);
  EXPECT_EQ(reloaded.list()[0].spec.job_id, id);
}

TEST(JobRegistry, ProgressIsNotJournaledOnEveryUpdate) {
  TempDir dir;
  JobRegistry registry(dir.path());
  std::string id = registry.create(spec("a"), 10).spec.job_id;
  std::size_t before = registry.journal_lines();
  for (int i = 0; i < 50; ++i)
    registry.update(
        id, [&](JobRecord& j) { j.progress.step = i; }, false);
  EXPECT_EQ(registry.journal_lines(), before);
  EXPECT_EQ(registry.find(id)->progress.step, 49);
}

/// Makes writes past `bytes` in any regular file of this process fail with EFBIG (as a full
/// disk would with ENOSPC) while it lives.
class FileSizeLimit {
 public:
  explicit FileSizeLimit(rlim_t bytes) {
    ::getrlimit(RLIMIT_FSIZE, &saved_);
    previous_handler_ = std::signal(SIGXFSZ, SIG_IGN);
    rlimit limit = saved_;
    limit.rlim_cur = bytes;
    ::setrlimit(RLIMIT_FSIZE, &limit);
  }
  ~FileSizeLimit() {
    ::setrlimit(RLIMIT_FSIZE, &saved_);
    std::signal(SIGXFSZ, previous_handler_);
  }

 private:
  rlimit saved_{};
  void (*previous_handler_)(int) = nullptr;
};

TEST(JobRegistry, AFailedJournalWriteIsUnavailableChangesNothingAndLeavesWholeRecords) {
  TempDir dir;
  JobRegistry registry(dir.path());
  JobRecord first = registry.create(spec("a", "job-a"), 100);
  const auto journal = dir.path() / "jobs.jsonl";
  const auto size = std::filesystem::file_size(journal);
  {
    FileSizeLimit limit(size + 300);  // room for part of one more record: a short write
    try {
      registry.create(spec("b", "job-b"), 100);
      FAIL() << "the journal cannot hold the new job";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::kUnavailable) << e.what();
    }
    try {
      registry.update(
          "job-a", [](JobRecord& j) { j.state = JobState::kRunning; }, true);
      FAIL() << "the journal cannot hold the change";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::kUnavailable);
    }
  }
  EXPECT_EQ(std::filesystem::file_size(journal), size) << "the partial record was cut off again";
  EXPECT_FALSE(registry.find("job-b")) << "a job that was not journaled does not exist";
  EXPECT_EQ(registry.find("job-a")->state, JobState::kQueued) << "a change that was not journaled was not made";
  // With room again, the same requests go through, and a fresh load reads every line.
  registry.create(spec("b", "job-b"), 100);
  registry.update(
      "job-a", [](JobRecord& j) { j.state = JobState::kRunning; }, true);
  JobRegistry reloaded(dir.path());
  ASSERT_EQ(reloaded.list().size(), 2u);
  EXPECT_EQ(reloaded.find("job-a")->state, JobState::kRunning);
  EXPECT_EQ(first.spec.job_id, "job-a");
}

// Documents (a sweep's record) share the journal's promises: a full journal refuses a new one
// or a change with kUnavailable and changes nothing; a reload, and the compaction a writer does
// when it opens the journal, keep the last version of each, in order.
TEST(JobRegistry, DocumentsAreJournaledLikeJobs) {
  TempDir dir;
  {
    JobRegistry registry(dir.path());
    registry.create(spec("a", "job-a"), 100);
    registry.create_document("sweep", "s1", {{"n", 1}});
    EXPECT_THROW(registry.create_document("sweep", "s1", {{"n", 9}}), Error) << "an id in use";
    const auto size = std::filesystem::file_size(dir.path() / "jobs.jsonl");
    {
      FileSizeLimit limit(size + 20);
      try {
        registry.update_document("sweep", "s1", [](nlohmann::json& b) { return b["n"] = 2, true; });
        FAIL() << "the journal cannot hold the change";
      } catch (const Error& e) {
        EXPECT_EQ(e.code(), ErrorCode::kUnavailable);
      }
      EXPECT_THROW(registry.create_document("sweep", "s2", {{"n", 1}}), Error);
    }
    EXPECT_EQ(std::filesystem::file_size(dir.path() / "jobs.jsonl"), size);
    EXPECT_EQ((*registry.find_document("sweep", "s1"))["n"], 1) << "a change not journaled was not made";
    EXPECT_FALSE(registry.find_document("sweep", "s2"));
    EXPECT_EQ(registry.update_document("sweep", "s1", [](nlohmann::json&) { return false; })->at("n"), 1);
    registry.update_document("sweep", "s1", [](nlohmann::json& b) { return b["n"] = 2, true; });
    registry.create_document("sweep", "s2", {{"n", 1}});
    EXPECT_FALSE(registry.update_document("sweep", "nope", [](nlohmann::json&) { return true; }));
  }
  JobRegistry reloaded(dir.path());  // a writer: compacts on opening
  ASSERT_EQ(reloaded.documents("sweep").size(), 2u);
  EXPECT_EQ(reloaded.documents("sweep")[0]["n"], 2) << "the last line of s1, first in order";
  EXPECT_EQ(reloaded.documents("other").size(), 0u);
  EXPECT_EQ(reloaded.list().size(), 1u) << "jobs and documents side by side";
  EXPECT_EQ(reloaded.journal_lines(), 3u) << "compacted: one line each";
}

TEST(JobRegistry, UpdateIfChangesOnlyWhenTheExpectationHolds) {
  TempDir dir;
  JobRegistry registry(dir.path());
  registry.create(spec("a", "job-a"), 10);
  auto queued = [](const JobRecord& j) { return j.state == JobState::kQueued; };
  auto cancel = [](JobRecord& j) { j.state = JobState::kCancelled; };
  auto run = [](JobRecord& j) { j.state = JobState::kRunning; };
  ASSERT_TRUE(registry.update_if("job-a", queued, cancel, true));
  EXPECT_FALSE(registry.update_if("job-a", queued, run, true)) << "a dispatch that lost the race changes nothing";
  EXPECT_EQ(registry.find("job-a")->state, JobState::kCancelled);
  EXPECT_FALSE(registry.update_if("unknown", queued, run, true));
}

}  // namespace
}  // namespace mlswarm
