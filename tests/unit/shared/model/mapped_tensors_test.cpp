// Large CPU tensors in mappings of their own while a scope lives on the thread.

#include "mlswarm/torch/mapped_tensors.h"

#include <cstdint>
#include <thread>

#include <c10/core/CPUAllocator.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

namespace mlswarm {
namespace {

bool page_aligned(const void* p) { return (reinterpret_cast<std::uintptr_t>(p) & 4095U) == 0; }

TEST(MappedTensors, InAScopeALargeTensorHasAMappingOfItsOwnGivenBackWhenItIsFreed) {
  install_mapped_tensors();
  const std::size_t before = mapped_tensor_bytes();
  torch::Tensor outside = torch::empty({1 << 18});  // 1 MiB, no scope: malloc's
  EXPECT_EQ(mapped_tensor_bytes(), before);
  torch::Tensor large;
  torch::Tensor small;
  torch::Tensor other_thread;
  {
    MappedTensorsScope scope;
    large = torch::full({100000}, 2.0f);                                  // 400,000 bytes: 98 pages
    small = torch::ones({1000});                                          // under kMappedTensorMinBytes: malloc's
    std::thread([&] { other_thread = torch::empty({1 << 18}); }).join();  // not in a scope
  }
  EXPECT_EQ(mapped_tensor_bytes(), before + 98 * 4096);
  EXPECT_TRUE(page_aligned(large.data_ptr()));
  EXPECT_FLOAT_EQ(large.sum().item<float>(), 200000.0f);  // usable as any tensor
  torch::Tensor after_scope = torch::empty({1 << 18});    // the scope has ended
  EXPECT_EQ(mapped_tensor_bytes(), before + 98 * 4096);
  std::thread([moved = std::move(large)]() mutable { moved = torch::Tensor(); }).join();  // freed elsewhere
  EXPECT_EQ(mapped_tensor_bytes(), before);
  EXPECT_FLOAT_EQ(small.sum().item<float>(), 1000.0f);
}

TEST(MappedTensors, TheRawInterfaceGivesBackWhatItAllocatedInAndOutOfAScope) {
  install_mapped_tensors();
  c10::Allocator* allocator = c10::GetCPUAllocator();
  ASSERT_NE(allocator->raw_deleter(), nullptr);
  const std::size_t before = mapped_tensor_bytes();
  void* in_scope = nullptr;
  {
    MappedTensorsScope scope;
    in_scope = allocator->raw_allocate(std::size_t{1} << 20);
  }
  void* outside = allocator->raw_allocate(std::size_t{1} << 20);
  EXPECT_EQ(mapped_tensor_bytes(), before + (std::size_t{1} << 20));
  static_cast<char*>(in_scope)[(1 << 20) - 1] = 1;
  static_cast<char*>(outside)[(1 << 20) - 1] = 1;
  allocator->raw_deallocate(in_scope);
  allocator->raw_deallocate(outside);
  EXPECT_EQ(mapped_tensor_bytes(), before);
}

}  // namespace
}  // namespace mlswarm
