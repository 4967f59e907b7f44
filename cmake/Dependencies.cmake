# Every dependency is a Debian package (see DESIGN.md). LibTorch is found through
# find_package(Torch), so a CUDA build is selected by pointing CMAKE_PREFIX_PATH at it.
find_package(PkgConfig REQUIRED)
pkg_check_modules(HTTPLIB REQUIRED IMPORTED_TARGET cpp-httplib)
pkg_check_modules(STB REQUIRED IMPORTED_TARGET stb)
pkg_check_modules(TURBOJPEG REQUIRED IMPORTED_TARGET libturbojpeg)
find_package(nlohmann_json 3.10 REQUIRED)
find_package(fmt REQUIRED)
find_package(spdlog REQUIRED)
find_package(CLI11 CONFIG QUIET)
if(NOT CLI11_FOUND)
  find_path(CLI11_INCLUDE_DIR CLI/CLI.hpp REQUIRED)
  add_library(CLI11::CLI11 INTERFACE IMPORTED)
  target_include_directories(CLI11::CLI11 INTERFACE ${CLI11_INCLUDE_DIR})
endif()
find_package(ZLIB REQUIRED)
find_package(OpenSSL REQUIRED)
find_package(Threads REQUIRED)
find_package(Boost 1.74 REQUIRED)
find_path(STB_INCLUDE_DIR stb_image.h PATH_SUFFIXES stb REQUIRED)
find_package(Torch REQUIRED)
message(STATUS "LibTorch ${Torch_VERSION}: ${TORCH_LIBRARIES}")

# Torch's exported flags (the C++ ABI define) apply to the Torch targets only.
add_library(mlswarm_torch_deps INTERFACE)
# libstdc++ right before LibTorch on every link line: PyTorch's libtorch libraries export their
# own copies of libstdc++ functions (std::filesystem::remove_all among them, which jumps to
# address 0 when called from outside), and a call binds to the first library that defines it.
# Shared libstdc++: it comes before LibTorch among the binary's DT_NEEDED. A toolchain that links
# libstdc++ statically (PyTorch's GPU machine's g++ 13): its archive is searched while the
# project's calls are still undefined, so they resolve inside the binary, not in LibTorch.
# docs/architecture.md, "Linking against LibTorch"; scripts/check_link_order.sh checks it.
target_link_libraries(mlswarm_torch_deps INTERFACE stdc++ ${TORCH_LIBRARIES})
target_include_directories(mlswarm_torch_deps SYSTEM INTERFACE ${TORCH_INCLUDE_DIRS})
separate_arguments(_torch_flags UNIX_COMMAND "${TORCH_CXX_FLAGS}")
target_compile_options(mlswarm_torch_deps INTERFACE ${_torch_flags})
