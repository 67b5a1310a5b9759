#include "nfhep/isa.hpp"

#include <atomic>
#include <cstdlib>
#include <stdexcept>

namespace nfhep {
namespace {

bool cpu_supports(Isa isa) {
  switch (isa) {
    case Isa::generic:
      return true;
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    case Isa::avx2:
      return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("bmi2");
    case Isa::avx512:
      return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
             __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#endif
    default:
      return false;
  }
}

bool compiled(Isa isa) {
  switch (isa) {
    case Isa::generic:
      return true;
#if defined(NFHEP_HAVE_ISA_AVX2)
    case Isa::avx2:
      return true;
#endif
#if defined(NFHEP_HAVE_ISA_AVX512)
    case Isa::avx512:
      return true;
#endif
    default:
      return false;
  }
}

bool parse(const std::string& name, Isa& out) {
  if (name == "generic") out = Isa::generic;
  else if (name == "avx2") out = Isa::avx2;
  else if (name == "avx512") out = Isa::avx512;
  else return false;
  return true;
}

Isa best_available() {
  Isa best = Isa::generic;
  for (Isa i : {Isa::avx2, Isa::avx512})
    if (compiled(i) && cpu_supports(i)) best = i;
  return best;
}

Isa default_isa() {
  Isa best = best_available();
  if (const char* env = std::getenv("NFHEP_ISA")) {
    Isa cap;
    if (parse(env, cap) && static_cast<int>(cap) < static_cast<int>(best)) best = cap;
  }
  return best;
}

std::atomic<int> g_isa{-1};

}  // namespace

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::avx2:
      return "avx2";
    case Isa::avx512:
      return "avx512";
    default:
      return "generic";
  }
}

std::vector<Isa> available_isas() {
  std::vector<Isa> out;
  for (Isa i : {Isa::generic, Isa::avx2, Isa::avx512})
    if (compiled(i) && cpu_supports(i)) out.push_back(i);
  return out;
}

Isa active_isa() {
  int v = g_isa.load(std::memory_order_relaxed);
  if (v < 0) {
    v = static_cast<int>(default_isa());
    g_isa.store(v, std::memory_order_relaxed);
  }
  return static_cast<Isa>(v);
}

void set_isa(const std::string& name) {
  if (name.empty()) {
    g_isa.store(static_cast<int>(default_isa()), std::memory_order_relaxed);
    return;
  }
  Isa want;
  if (!parse(name, want))
    throw std::invalid_argument("set_isa: isa must be 'generic', 'avx2' or 'avx512', got '" + name + "'");
  if (!compiled(want))
    throw std::invalid_argument("set_isa: isa '" + name + "' is not compiled into this build of nfhep");
  if (!cpu_supports(want))
    throw std::invalid_argument("set_isa: this CPU does not support isa '" + name + "'");
  g_isa.store(static_cast<int>(want), std::memory_order_relaxed);
}

}  // namespace nfhep
