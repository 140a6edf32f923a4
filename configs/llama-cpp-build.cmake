# Read by the llama-cpp-python build (Makefile: CMAKE_PROJECT_llama_cpp_INCLUDE), right after its project().
# llama-cpp-python forces llama.cpp's "common" library on (a cache entry set with FORCE), though the Python
# package never loads it; it is half of the build time. A normal variable shadows that cache entry, so
# llama.cpp skips it. With the multimodal library off too (LLAVA_BUILD=OFF) the wheel holds libllama and
# libggml only. Measured on 2 cores: 4:47 -> 2:30 wall (see README, Quick start).
set(LLAMA_BUILD_COMMON OFF)
