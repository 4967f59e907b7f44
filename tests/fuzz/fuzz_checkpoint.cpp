// Checkpoints a trainer resumes from (HOME_DIR/jobs/<id>/checkpoint.pt): the sealed frame
// (magic, CRC, length), LibTorch's archive, the JSON state and the weights loaded into a
// fresh model. Inputs that are not sealed are sealed here first, so that mutations reach
// the archive reader and do not all stop at the CRC check.

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include <nlohmann/json.hpp>

#include "mlswarm/atomic_file.h"
#include "mlswarm/job.h"
#include "training.h"

namespace {

const mlswarm::JobSpec& fuzz_spec() {
  static const mlswarm::JobSpec spec =
      mlswarm::parse_job_spec(nlohmann::json{{"job_id", "fuzz"},
                                             {"model_id", "fuzz"},
                                             {"model_type", "mlp"},
                                             {"dataset", "mnist"},
                                             {"train_opts", {{"epochs", 2}, {"batch_size", 16}, {"seed", 1}}}});
  return spec;
}

}  // namespace

// The harness checks itself: a real checkpoint must get through every layer (else the
// fuzzer would only ever exercise the rejections). With MLSWARM_FUZZ_SEED_DIR set it also
// leaves that checkpoint there as a seed (it is 2 MB, so it is not kept in the repository).
extern "C" int LLVMFuzzerInitialize(int*, char***) {
  const std::string valid = mlswarm::fresh_checkpoint(fuzz_spec(), 2);
  if (mlswarm::checkpoint_resume_epoch(valid, fuzz_spec()) != 2) __builtin_trap();
  if (const char* dir = std::getenv("MLSWARM_FUZZ_SEED_DIR")) {
    std::ofstream(std::filesystem::path(dir) / "fresh_checkpoint", std::ios::binary) << valid;
  }
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace mlswarm;
  const JobSpec& spec = fuzz_spec();
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  (void)checkpoint_resume_epoch(bytes, spec);  // as found on disk
  if (bytes.substr(0, 8) != "MLSWSEAL") (void)checkpoint_resume_epoch(seal(bytes), spec);
  return 0;
}
