// nfhep/config.hpp: macros shared by every header. C++17, no Python, no ROOT, no CUDA headers needed.
#pragma once

// NFHEP_HD marks the per-element maths (math/*.hpp): one definition serves the CPU SIMD loops and the
// CUDA kernels. Under nvcc it is __host__ __device__ inline, otherwise plain inline.
#if defined(__CUDACC__)
#define NFHEP_HD __host__ __device__ inline
#define NFHEP_FORCEINLINE __host__ __device__ __forceinline__
#else
#define NFHEP_HD inline
#if defined(__GNUC__)
#define NFHEP_FORCEINLINE inline __attribute__((always_inline))
#else
#define NFHEP_FORCEINLINE inline
#endif
#endif

// Symbols of libnfhep_core that users (ROOT macros, frameworks, _core) may call.
#if defined(_WIN32)
#if defined(NFHEP_BUILDING_CORE)
#define NFHEP_API __declspec(dllexport)
#else
#define NFHEP_API __declspec(dllimport)
#endif
#else
#define NFHEP_API __attribute__((visibility("default")))
#endif

#if defined(__GNUC__) || defined(__clang__)
#define NFHEP_RESTRICT __restrict__
#else
#define NFHEP_RESTRICT
#endif
