// fuzz_model: mutation fuzzing of the inference engine's model-file reader (nfhep::Flow::from_bytes).
//
//   fuzz_model CORPUS_DIR MUTATIONS [SEED] [CRASH_DIR]
//
// Takes valid model files from CORPUS_DIR (written by nfhep.save), applies random mutations and loads
// each mutant. Every load must either succeed or throw nfhep::FormatError; anything else (another
// exception type, a crash, a sanitizer report) is a failure, and the mutant is written to CRASH_DIR
// (default: the current directory) for reproduction. When a mutant loads, it is also evaluated (log_prob
// on random events including NaN/inf/huge values, sample with and without log-densities): that must not
// crash either.
//
// Mutations (1-4 per mutant, deterministic given SEED):
//   bytes      bit flips, byte overwrites, insertions, deletions, truncation at a random length,
//              garbage appended, the 8-byte header length edited;
//   header     edits of the JSON header text that keep the container consistent (the length field is
//              rewritten): numbers replaced (0, -1, 1, 2^31, 2^63, 1e308, 0.5, ...), dtype codes swapped,
//              keys renamed, values deleted or duplicated, brackets cut;
//   data+sum   tensor bytes changed AND the checksum recomputed (so the mutant passes the checksum test and
//              reaches the shape, value and evaluation code: extreme weights, NaN, permutation edits).
//
// Prints "N passed, M failed" (passed = mutants handled correctly) and exits 1 on any failure.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <dirent.h>
#include <exception>
#include <fstream>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "nfhep/detail/json.hpp"
#include "nfhep/detail/sha256.hpp"
#include "nfhep/flow.hpp"

namespace {

using Bytes = std::vector<unsigned char>;

Bytes read_file(const std::string& p) {
  std::ifstream f(p, std::ios::binary);
  return Bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

std::uint64_t header_len(const Bytes& b) {
  if (b.size() < 8) return 0;
  std::uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | b[i];
  return v;
}

void set_header_len(Bytes& b, std::uint64_t n) {
  for (int i = 0; i < 8; ++i) b[i] = static_cast<unsigned char>(n >> (8 * i));
}

// The header text of a valid-looking file, or false.
bool split(const Bytes& b, std::string& header, Bytes& data) {
  const std::uint64_t n = header_len(b);
  if (b.size() < 8 || n > b.size() - 8) return false;
  header.assign(reinterpret_cast<const char*>(b.data() + 8), static_cast<std::size_t>(n));
  data.assign(b.begin() + 8 + static_cast<std::ptrdiff_t>(n), b.end());
  return true;
}

Bytes join(const std::string& header, const Bytes& data) {
  Bytes out(8);
  set_header_len(out, header.size());
  out.insert(out.end(), header.begin(), header.end());
  out.insert(out.end(), data.begin(), data.end());
  return out;
}

struct Mutator {
  std::mt19937_64 rng;
  std::size_t below(std::size_t n) { return n ? static_cast<std::size_t>(rng() % n) : 0; }

  void bytes(Bytes& b) {
    switch (below(7)) {
      case 0:
        if (!b.empty()) b[below(b.size())] ^= static_cast<unsigned char>(1u << below(8));
        break;
      case 1:
        if (!b.empty()) b[below(b.size())] = static_cast<unsigned char>(rng());
        break;
      case 2:
        b.insert(b.begin() + static_cast<std::ptrdiff_t>(below(b.size() + 1)), static_cast<unsigned char>(rng()));
        break;
      case 3:
        if (!b.empty()) b.erase(b.begin() + static_cast<std::ptrdiff_t>(below(b.size())));
        break;
      case 4:
        b.resize(below(b.size() + 1));
        break;
      case 5:
        for (std::size_t k = below(64) + 1; k; --k) b.push_back(static_cast<unsigned char>(rng()));
        break;
      default:
        if (b.size() >= 8) {
          const std::uint64_t choices[] = {0, 1, 2, header_len(b) - 1, header_len(b) + 1, b.size(), b.size() - 8,
                                           100000001ull, ~0ull, 1ull << 63};
          set_header_len(b, choices[below(sizeof choices / sizeof choices[0])]);
        }
    }
  }

  void header(Bytes& b) {
    std::string h;
    Bytes data;
    if (!split(b, h, data) || h.empty()) return bytes(b);
    static const char* numbers[] = {"0", "-1", "1", "2", "3", "2147483648", "9223372036854775807",
                                    "18446744073709551616", "1e308", "-1e308", "0.5", "1e-300", "4294967296",
                                    "100000", "65", "-0", "7.0"};
    static const char* codes[] = {"F32", "F64", "I64", "I32", "I16", "I8", "U8", "BOOL", "F16", "BF16", "X"};
    switch (below(7)) {
      case 0: {  // replace a number
        std::vector<std::size_t> pos;
        for (std::size_t i = 0; i < h.size(); ++i)
          if ((h[i] >= '0' && h[i] <= '9') && (i == 0 || !(h[i - 1] >= '0' && h[i - 1] <= '9'))) pos.push_back(i);
        if (pos.empty()) break;
        const std::size_t p = pos[below(pos.size())];
        std::size_t e = p;
        while (e < h.size() && ((h[e] >= '0' && h[e] <= '9') || h[e] == '.' || h[e] == 'e' || h[e] == '-')) ++e;
        h.replace(p, e - p, numbers[below(sizeof numbers / sizeof numbers[0])]);
        break;
      }
      case 1: {  // swap a dtype code
        const std::size_t p = h.find("\"dtype\":\"", below(h.size()));
        if (p == std::string::npos) break;
        const std::size_t s = p + 9, e = h.find('"', s);
        if (e == std::string::npos) break;
        h.replace(s, e - s, codes[below(sizeof codes / sizeof codes[0])]);
        break;
      }
      case 2: {  // rename a key (a quoted string followed by a colon)
        const std::size_t p = h.find("\":", below(h.size()));
        if (p == std::string::npos || p == 0) break;
        h.insert(p, 1, static_cast<char>('a' + below(26)));
        break;
      }
      case 3: {  // delete a span
        const std::size_t p = below(h.size());
        h.erase(p, below(std::min<std::size_t>(64, h.size() - p) + 1));
        break;
      }
      case 4: {  // duplicate a span
        const std::size_t p = below(h.size());
        const std::string s = h.substr(p, below(64) + 1);
        h.insert(below(h.size() + 1), s);
        break;
      }
      case 5: {  // cut at a bracket
        std::vector<std::size_t> pos;
        for (std::size_t i = 0; i < h.size(); ++i)
          if (h[i] == '[' || h[i] == '{' || h[i] == ']' || h[i] == '}' || h[i] == ',') pos.push_back(i);
        if (!pos.empty()) h.erase(pos[below(pos.size())], 1);
        break;
      }
      default: {  // escaped metadata: flip true/false, null in place of a value
        const char* from[] = {"true", "false", "[]", "null", "\\\"reverse\\\"", "\\\"relu\\\""};
        const char* to[] = {"false", "true", "null", "[]", "\\\"random\\\"", "\\\"gelu\\\""};
        const std::size_t k = below(6);
        const std::size_t p = h.find(from[k], below(h.size()));
        if (p != std::string::npos) h.replace(p, std::strlen(from[k]), to[k]);
      }
    }
    b = join(h, data);
  }

  // Change tensor bytes and recompute the checksum (docs/model-format.md §6), so the mutant gets past it.
  void data_with_checksum(Bytes& b) {
    std::string h;
    Bytes data;
    if (!split(b, h, data)) return bytes(b);
    nfhep::detail::json::Value hdr;
    try {
      hdr = nfhep::detail::json::parse(h);
    } catch (const nfhep::detail::json::ParseError&) {
      return bytes(b);
    }
    if (!hdr.is_object() || data.empty()) return bytes(b);
    // interesting values for a 4- or 8-byte element
    const std::size_t k = below(data.size());
    switch (below(5)) {
      case 0:
        data[k] ^= static_cast<unsigned char>(1u << below(8));
        break;
      case 1: {
        const float vals[] = {0.f, -0.f, 1e30f, -1e30f, 3.4e38f, 1e-40f, std::numeric_limits<float>::quiet_NaN(),
                              std::numeric_limits<float>::infinity(), 88.f, -88.f};
        const float v = vals[below(10)];
        const std::size_t at = (k / 4) * 4;
        if (at + 4 <= data.size()) std::memcpy(&data[at], &v, 4);
        break;
      }
      case 2: {
        const double vals[] = {0.0, 1e300, -1e300, 709.0, -745.0, std::numeric_limits<double>::quiet_NaN(), 1e-310};
        const double v = vals[below(7)];
        const std::size_t at = (k / 8) * 8;
        if (at + 8 <= data.size()) std::memcpy(&data[at], &v, 8);
        break;
      }
      case 3: {  // an int64 (permutation entries): out of range, negative, duplicate
        const std::int64_t vals[] = {-1, 0, 1, 2, 1000000, std::numeric_limits<std::int64_t>::min()};
        const std::int64_t v = vals[below(6)];
        const std::size_t at = (k / 8) * 8;
        if (at + 8 <= data.size()) std::memcpy(&data[at], &v, 8);
        break;
      }
      default:
        data[k] = static_cast<unsigned char>(rng());
    }
    // recompute the checksum over the (possibly inconsistent) tensor table
    std::vector<std::pair<std::string, const nfhep::detail::json::Value*>> tensors;
    for (const auto& kv : hdr.as_object())
      if (kv.first != "__metadata__") tensors.emplace_back(kv.first, &kv.second);
    std::sort(tensors.begin(), tensors.end(), [](const auto& a, const auto& c) { return a.first < c.first; });
    nfhep::detail::Sha256 sha;
    for (const auto& [name, e] : tensors) {
      const auto* dt = e->find("dtype");
      const auto* sh = e->find("shape");
      const auto* off = e->find("data_offsets");
      if (!dt || !dt->is_string() || !sh || !sh->is_array() || !off || !off->is_array() || off->as_array().size() != 2 ||
          !off->as_array()[0].is_integer() || !off->as_array()[1].is_integer())
        return;
      const std::int64_t b0 = off->as_array()[0].as_int64(), b1 = off->as_array()[1].as_int64();
      if (b0 < 0 || b1 < b0 || static_cast<std::uint64_t>(b1) > data.size()) return;
      const unsigned char z = 0;
      sha.update(name.data(), name.size());
      sha.update(&z, 1);
      sha.update(dt->as_string().data(), dt->as_string().size());
      sha.update(&z, 1);
      std::vector<std::uint64_t> dims;
      for (const auto& d : sh->as_array()) dims.push_back(d.is_integer() ? static_cast<std::uint64_t>(d.as_int64()) : 0);
      if (dims.empty()) dims.push_back(1);
      for (std::uint64_t d : dims) {
        unsigned char buf[8];
        for (int i = 0; i < 8; ++i) buf[i] = static_cast<unsigned char>(d >> (8 * i));
        sha.update(buf, 8);
      }
      sha.update(data.data() + b0, static_cast<std::size_t>(b1 - b0));
    }
    const std::string hex = nfhep::detail::to_hex(sha.finish());
    const std::size_t p = h.find("\\\"value\\\": \\\"");
    if (p == std::string::npos) return;
    const std::size_t s = p + 13;
    if (s + 64 > h.size()) return;
    h.replace(s, 64, hex);
    b = join(h, data);
  }
};

void exercise(const nfhep::Flow& f, std::mt19937_64& rng) {
  const std::size_t D = f.num_features(), C = f.num_context(), n = 5;
  std::vector<double> x(n * D), c(n * C), out(n), s(n * D), lp(n);
  const double specials[] = {0.0, 1.0, -1.0, 1e300, -1e300, std::numeric_limits<double>::quiet_NaN(),
                             std::numeric_limits<double>::infinity(), 1e-310, 3.0, -7.5};
  for (auto& v : x) v = specials[rng() % 10];
  for (auto& v : c) v = specials[rng() % 10];
  f.log_prob(x.data(), n, out.data(), C ? c.data() : nullptr);
  std::vector<float> xf(x.begin(), x.end()), cf(c.begin(), c.end()), of(n);
  nfhep::Workspace ws = f.make_workspace(2);
  f.log_prob(ws, xf.data(), n, of.data(), C ? cf.data() : nullptr);
  std::vector<std::uint8_t> sup(n);
  f.in_support(x.data(), n, sup.data());
  // sample refuses a non-finite context value (std::invalid_argument naming the feature): check that,
  // then sample with a finite context.
  bool finite = true;
  for (std::size_t j = 0; j < C; ++j) finite = finite && std::isfinite(c[j]);
  if (!finite) {
    bool refused = false;
    try {
      f.sample(n, rng(), rng() % 1000, s.data(), c.data(), 1, lp.data());
    } catch (const std::invalid_argument&) {
      refused = true;
    }
    if (!refused) {
      std::fprintf(stderr, "sample accepted a non-finite context value\n");
      std::abort();
    }
    for (std::size_t j = 0; j < C; ++j)
      if (!std::isfinite(c[j])) c[j] = 0.5;
  }
  f.sample(n, rng(), rng() % 1000, s.data(), C ? c.data() : nullptr, C ? 1 : 0, lp.data());
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s CORPUS_DIR MUTATIONS [SEED] [CRASH_DIR]\n", argv[0]);
    return 2;
  }
  const std::string dir = argv[1];
  const long long count = std::atoll(argv[2]);
  const std::uint64_t seed = argc > 3 ? std::strtoull(argv[3], nullptr, 10) : 1;
  const std::string crash_dir = argc > 4 ? argv[4] : ".";
  std::vector<Bytes> corpus;
  if (DIR* d = opendir(dir.c_str())) {
    std::vector<std::string> names;
    while (dirent* e = readdir(d)) {
      const std::string n = e->d_name;
      if (n.size() > 12 && n.compare(n.size() - 12, 12, ".safetensors") == 0) names.push_back(n);
    }
    closedir(d);
    std::sort(names.begin(), names.end());
    for (const auto& n : names) corpus.push_back(read_file(dir + "/" + n));
  }
  if (corpus.empty()) {
    std::fprintf(stderr, "fuzz_model: no .safetensors files in %s\n", dir.c_str());
    return 2;
  }
  // the seeds themselves must load
  std::mt19937_64 seed_rng(1);
  for (const auto& b : corpus) exercise(nfhep::Flow::from_bytes(b.data(), b.size(), "seed"), seed_rng);
  Mutator mut{std::mt19937_64(seed)};
  std::mt19937_64 eval_rng(seed ^ 0x9e3779b97f4a7c15ull);
  long long passed = 0, failed = 0, loaded = 0, refused = 0;
  for (long long i = 0; i < count; ++i) {
    Bytes b = corpus[mut.below(corpus.size())];
    const std::size_t n_mut = 1 + mut.below(4);
    for (std::size_t k = 0; k < n_mut; ++k) {
      const std::size_t kind = mut.below(10);
      if (kind < 4)
        mut.bytes(b);
      else if (kind < 7)
        mut.header(b);
      else
        mut.data_with_checksum(b);
    }
    try {
      const nfhep::Flow f = nfhep::Flow::from_bytes(b.data(), b.size(), "mutant");
      ++loaded;
      exercise(f, eval_rng);
      ++passed;
    } catch (const nfhep::FormatError&) {
      ++refused;
      ++passed;
    } catch (const std::exception& e) {
      ++failed;
      const std::string path = crash_dir + "/fuzz_failure_" + std::to_string(i) + ".safetensors";
      std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(b.data()), b.size());
      std::fprintf(stderr, "mutant %lld: unexpected exception (not nfhep::FormatError): %s; saved as %s\n", i,
                   e.what(), path.c_str());
    }
  }
  std::printf("fuzz_model: %lld mutants of %zu seed files (seed %llu): %lld loaded and evaluated, %lld refused "
              "with nfhep::FormatError\n",
              count, corpus.size(), static_cast<unsigned long long>(seed), loaded, refused);
  std::printf("%lld passed, %lld failed\n", passed, failed);
  return failed ? 1 : 0;
}
