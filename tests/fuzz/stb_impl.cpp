// stb_image and stb_image_resize compiled with the fuzz target's instrumentation (libFuzzer
// builds only; see CMakeLists.txt).
#define STB_IMAGE_IMPLEMENTATION
#define STB_IMAGE_RESIZE_IMPLEMENTATION
#include <stb_image.h>
#include <stb_image_resize.h>
