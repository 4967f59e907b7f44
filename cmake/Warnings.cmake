# Warnings for the project's own targets; third-party headers come in as SYSTEM.
add_library(mlswarm_warnings INTERFACE)
target_compile_options(mlswarm_warnings INTERFACE
  -Wall -Wextra -Wpedantic -Wnon-virtual-dtor -Wcast-align
  -Wunused -Woverloaded-virtual -Wimplicit-fallthrough)
if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
  target_compile_options(mlswarm_warnings INTERFACE -Wshadow=local
    # GCC 12 reports std::string copies in inlined code as overlapping (GCC bug 105329).
    -Wno-restrict)
endif()
