// Checkpoints a trainer resumes from (HOME_DIR/jobs/<id>/checkpoint.pt): the sealed frame
// (magic, CRC, length), LibTorch's archive, the JSON state and the weights loaded into a
// fresh model. Inputs that are not sealed are sealed here first, so that mutations reach
// the archive reader and do not all stop at the CRC check.

#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "mlswarm/atomic_file.h"
#include "mlswarm/job.h"
#include "training.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace mlswarm;
  static const JobSpec spec = parse_job_spec(nlohmann::json{
      {"job_id", "fuzz"}, {"model_id", "fuzz"}, {"model_type", "mlp"}, {"dataset", "mnist"},
      {"train_opts", {{"epochs", 2}, {"batch_size", 16}, {"seed", 1}}}});
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  (void)checkpoint_resume_epoch(bytes, spec);  // as found on disk
  if (bytes.substr(0, 8) != "MLSWSEAL") (void)checkpoint_resume_epoch(seal(bytes), spec);
  return 0;
}
