// HOME_DIR/datasets/<name>/manifest.json as every trainer and controller reads it: text -> JSON
// -> folder_manifest_from_json, then what a reader does with it (the dataset's facts, and the
// labels it indexes classes with). The file lies on a shared mount: a hostile or torn one must
// be refused (Error), never crash a daemon or index out of range, and one that reads back must
// read back the same once written again.

#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "mlswarm/error.h"
#include "mlswarm/folder_dataset.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace mlswarm;
  nlohmann::json j = nlohmann::json::parse(data, data + size, nullptr, false);
  if (j.is_discarded()) return 0;
  try {
    FolderManifest m = folder_manifest_from_json(j);
    for (const auto* split : {&m.train, &m.test}) {
      for (const auto& f : *split) {
        if (f.label < 0 || static_cast<std::size_t>(f.label) >= m.classes.size()) __builtin_trap();
        if (f.path.empty() || f.path.front() == '/') __builtin_trap();
      }
    }
    if (m.channels < 1 || m.channels > 3 || m.height <= 0 || m.width <= 0) __builtin_trap();
    const DatasetInfo info = m.info();
    (void)info;
    FolderManifest again = folder_manifest_from_json(to_json(m));
    if (again.classes != m.classes || again.train.size() != m.train.size() || again.test.size() != m.test.size() ||
        again.content_hash != m.content_hash || again.channels != m.channels) {
      __builtin_trap();
    }
  } catch (const Error&) {
  }
  return 0;
}
