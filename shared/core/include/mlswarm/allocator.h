#pragma once

#include <string>

namespace mlswarm {

/// Sets glibc malloc up for LibTorch's large, short-lived tensors, for the processes that
/// train or serve models. By default glibc hands memory above a moving threshold back to the
/// kernel (munmap, or trimming the heap) as soon as it is freed, so every training step
/// mapped, faulted in and zeroed its activations again: a third of a step's CPU time went to
/// the kernel, and a step's speed swung by up to 2x from one run to the next. With freed
/// memory kept for reuse (mmap threshold 32 MiB, glibc's maximum; trim threshold 1 GiB), the
/// kernel's share fell to about 1% (docs/benchmarks.md). The price: a process's resident
/// memory stays at its peak. Leaves glibc alone when the operator configured it
/// (GLIBC_TUNABLES or any MALLOC_*_ variable). Returns what it did, for the log.
std::string tune_allocator_for_tensors();

/// Gives the memory malloc holds free back to the system: after something large was freed on
/// purpose (a model loaded, using and freeing a few MB; models unloaded for SERVE_MEMORY_MB),
/// so that the bound shows in the process's resident memory despite the trim threshold above.
/// malloc_trim gives back every arena's free chunks but not the free top of a thread's own
/// arena, so the calling thread's arena is trimmed too (the threshold lowered for a moment).
/// Takes milliseconds; call it from the thread that did the work.
void release_free_memory();

}  // namespace mlswarm
