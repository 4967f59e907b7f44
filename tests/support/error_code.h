#pragma once

// "Which error does this throw?" for unit tests.

#include <utility>

#include "mlswarm/error.h"

namespace mlswarm::testing {

/// What Error(code) `f()` throws; ErrorCode::kInternal when it throws none (the one code no
/// check in the tests expects from a refusal, so it stands for "went through").
template <typename F>
ErrorCode thrown_code(F&& f) {
  try {
    std::forward<F>(f)();
  } catch (const Error& e) {
    return e.code();
  }
  return ErrorCode::kInternal;
}

}  // namespace mlswarm::testing
