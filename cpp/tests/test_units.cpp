// test_units: unit tests of the C++ engine's building blocks, with independent references.
//
//   test_units            (no arguments; prints the measured math errors, one line per failed check and
//                          a summary)
//
//   philox     Philox4x32-10 known-answer tests of Random123 (a reference implementation written here),
//              then nfhep::detail::standard_normals against Box-Muller of that reference, its range,
//              prefix consistency, stream separation and moments;
//   sha256     FIPS 180-4 / NIST CAVP vectors (values cross-checked with Python's hashlib), incremental
//              updates split at every offset around the 64-byte block boundaries, one million 'a';
//   json       the strict RFC 8259 reader of the model-file header (nfhep/detail/json.hpp): valid
//              documents, every refusal class (json::ParseError), and the same refusals surfacing as
//              nfhep::FormatError through nfhep::Flow::from_bytes;
//   math       nfhep/math/special.hpp (exp, log, log1p, softplus, sigmoid, exp_nonpos, log1p_unit) in ulp
//              against long double std:: references, the affine bijector, and the RQS block (inverse of
//              forward, log-determinants vs finite differences, tails, knots, NaN).
//
// Built by CMake with NFHEP_TESTS=ON (sanitized with NFHEP_SANITIZE=ON) and run by
// tests/test_cpp_units.py. Exit status 0 iff every check passed; the last line reads
// "test_units: N checks, M failed".
#include <array>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "nfhep/detail/json.hpp"
#include "nfhep/detail/philox.hpp"
#include "nfhep/detail/sha256.hpp"
#include "nfhep/flow.hpp"
#include "nfhep/math/affine.hpp"
#include "nfhep/math/rqs.hpp"
#include "nfhep/math/special.hpp"

namespace {

long long g_checks = 0, g_failed = 0;

void check(bool ok, const char* expr, const char* file, int line, const std::string& what) {
  ++g_checks;
  if (ok) return;
  ++g_failed;
  std::printf("FAIL %s:%d: %s%s%s\n", file, line, expr, what.empty() ? "" : " -- ", what.c_str());
}
#define CHECK(cond) check(static_cast<bool>(cond), #cond, __FILE__, __LINE__, std::string())
#define CHECK_MSG(cond, msg) check(static_cast<bool>(cond), #cond, __FILE__, __LINE__, (msg))

std::string hex32(const std::uint32_t* v, int n) {
  std::string s;
  char b[12];
  for (int i = 0; i < n; ++i) {
    std::snprintf(b, sizeof b, i ? " %08x" : "%08x", v[i]);
    s += b;
  }
  return s;
}

// ===================================================================================================
// Philox4x32-10
// ===================================================================================================

// Reference Philox4x32-10 (Salmon et al., SC'11; Random123's philox4x32 with R = 10), written from the
// paper: round = two 32x32->64 multiplications, the key added in between and bumped by the Weyl constants.
std::array<std::uint32_t, 4> philox_ref(std::array<std::uint32_t, 4> c, std::array<std::uint32_t, 2> k) {
  for (int r = 0; r < 10; ++r) {
    if (r) {
      k[0] += 0x9E3779B9u;
      k[1] += 0xBB67AE85u;
    }
    const std::uint64_t p0 = std::uint64_t{0xD2511F53u} * c[0];
    const std::uint64_t p1 = std::uint64_t{0xCD9E8D57u} * c[2];
    c = {static_cast<std::uint32_t>(p1 >> 32) ^ c[1] ^ k[0], static_cast<std::uint32_t>(p1),
         static_cast<std::uint32_t>(p0 >> 32) ^ c[3] ^ k[1], static_cast<std::uint32_t>(p0)};
  }
  return c;
}

// What nfhep::detail::standard_normals documents: for the pair j/2 of event ev under seed, one Philox
// block of ctr = (ev lo, ev hi, j/2, 0), key = (seed lo, seed hi); u1 = (top 53 bits of words 0:1 + 1)
// 2^-53 in (0, 1], u2 = top 53 bits of words 2:3 2^-53 in [0, 1); z = sqrt(-2 ln u1) (cos, sin)(2 pi u2).
void normals_ref(std::uint64_t seed, std::uint64_t ev, std::size_t d, long double* out) {
  const long double pi = 3.141592653589793238462643383279502884L;
  for (std::size_t j = 0; j < d; j += 2) {
    const auto w = philox_ref({static_cast<std::uint32_t>(ev), static_cast<std::uint32_t>(ev >> 32),
                               static_cast<std::uint32_t>(j / 2), 0u},
                              {static_cast<std::uint32_t>(seed), static_cast<std::uint32_t>(seed >> 32)});
    const std::uint64_t a = (std::uint64_t{w[0]} << 32 | w[1]) >> 11, b = (std::uint64_t{w[2]} << 32 | w[3]) >> 11;
    const long double u1 = static_cast<long double>(a + 1) * 0x1.0p-53L, u2 = static_cast<long double>(b) * 0x1.0p-53L;
    const long double r = std::sqrt(-2 * std::log(u1));
    out[j] = r * std::cos(2 * pi * u2);
    if (j + 1 < d) out[j + 1] = r * std::sin(2 * pi * u2);
  }
}

void test_philox() {
  struct Kat {
    std::array<std::uint32_t, 4> ctr;
    std::array<std::uint32_t, 2> key;
    std::array<std::uint32_t, 4> want;
  };
  // Random123 kat_vectors, philox4x32 10 rounds.
  const Kat kats[] = {
      {{0, 0, 0, 0}, {0, 0}, {0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u}},
      {{0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu},
       {0xffffffffu, 0xffffffffu},
       {0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu}},
      {{0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u},
       {0xa4093822u, 0x299f31d0u},
       {0xd16cfe09u, 0x94fdccebu, 0x5001e420u, 0x24126ea1u}},
  };
  for (const auto& k : kats) {
    const auto got = philox_ref(k.ctr, k.key);
    CHECK_MSG(got == k.want, "philox(" + hex32(k.ctr.data(), 4) + "; " + hex32(k.key.data(), 2) + ") = " +
                                 hex32(got.data(), 4) + ", want " + hex32(k.want.data(), 4));
  }

  // The header's generator is Box-Muller of exactly these blocks (odd and even d, 64-bit seeds and events).
  const std::uint64_t seeds[] = {0, 1, 20261205, 0xffffffffffffffffull, 0x0123456789abcdefull};
  const std::uint64_t evs[] = {0, 1, 2, 0xffffffffull, 0x100000000ull, 0xfffffffffffffffeull};
  for (std::uint64_t seed : seeds)
    for (std::uint64_t ev : evs)
      for (std::size_t d : {1, 2, 3, 7, 8}) {
        double got[8];
        long double want[8];
        nfhep::detail::standard_normals(seed, ev, d, got);
        normals_ref(seed, ev, d, want);
        for (std::size_t j = 0; j < d; ++j) {
          const long double err = std::fabs(static_cast<long double>(got[j]) - want[j]);
          CHECK_MSG(err <= 1e-13L * (1 + std::fabs(want[j])),
                    "standard_normals(" + std::to_string(seed) + ", " + std::to_string(ev) + ", " +
                        std::to_string(d) + ")[" + std::to_string(j) + "] = " + std::to_string(got[j]) +
                        " vs Box-Muller of the reference Philox " + std::to_string(static_cast<double>(want[j])));
        }
        // a prefix of a longer draw: out[j] depends only on (seed, ev, j)
        double longer[9];
        nfhep::detail::standard_normals(seed, ev, d + 1, longer);
        CHECK(std::memcmp(got, longer, d * sizeof(double)) == 0);
      }

  // Range, moments and stream separation over 10^5 draws (50000 events x 2). Every value is finite and
  // |z| <= sqrt(-2 ln 2^-53) = 8.5728... (u1 >= 2^-53 > 0 by construction); loose 5-sigma-ish bounds.
  const std::size_t n_ev = 50000;
  double s1 = 0, s2 = 0, s3 = 0, s4 = 0, cross = 0, zmax = 0;
  std::size_t n = 0, bad = 0, same = 0;
  for (std::size_t ev = 0; ev < n_ev; ++ev) {
    double z[2], w[2];
    nfhep::detail::standard_normals(7, ev, 2, z);
    nfhep::detail::standard_normals(8, ev, 2, w);  // another seed: another stream
    for (int j = 0; j < 2; ++j) {
      if (!std::isfinite(z[j]) || std::fabs(z[j]) > 8.5729) ++bad;
      zmax = std::fmax(zmax, std::fabs(z[j]));
      s1 += z[j];
      s2 += z[j] * z[j];
      s3 += z[j] * z[j] * z[j];
      s4 += z[j] * z[j] * z[j] * z[j];
      cross += z[j] * w[j];
      same += z[j] == w[j];
      ++n;
    }
  }
  const double m = s1 / n, v = s2 / n - m * m, skew = s3 / n, kurt = s4 / n;
  CHECK_MSG(bad == 0, std::to_string(bad) + " non-finite or out-of-range normals");
  CHECK_MSG(std::fabs(m) < 0.02, "mean " + std::to_string(m));          // sd 0.0032
  CHECK_MSG(std::fabs(v - 1) < 0.03, "variance " + std::to_string(v));  // sd 0.0045
  CHECK_MSG(std::fabs(skew) < 0.06, "third moment " + std::to_string(skew));   // sd 0.0077
  CHECK_MSG(std::fabs(kurt - 3) < 0.25, "fourth moment " + std::to_string(kurt));  // sd 0.031
  CHECK_MSG(std::fabs(cross / n) < 0.02, "seed 7 vs 8 correlation " + std::to_string(cross / n));
  CHECK_MSG(same == 0, std::to_string(same) + " equal values in the streams of seeds 7 and 8");
  CHECK_MSG(zmax > 3.5, "largest |z| in 1e5 draws " + std::to_string(zmax));  // P(max < 3.5) ~ 1e-20

  // The uniform mappings at their extremes (the reason u1 can never be 0, so log never gives -inf).
  const std::uint64_t top = (~0ull) >> 11;
  CHECK((0 + 1) * 0x1.0p-53 == 0x1.0p-53);
  CHECK((top + 1) * 0x1.0p-53 == 1.0);
  CHECK(top * 0x1.0p-53 < 1.0);
}

// ===================================================================================================
// SHA-256
// ===================================================================================================

std::string sha_hex(const std::string& m) {
  nfhep::detail::Sha256 s;
  s.update(m.data(), m.size());
  return nfhep::detail::to_hex(s.finish());
}

std::string pattern(std::size_t n) {  // every byte value occurs (catches signed-char mistakes)
  std::string m(n, '\0');
  for (std::size_t i = 0; i < n; ++i) m[i] = static_cast<char>((i * 37 + 11) & 0xFF);
  return m;
}

void test_sha256() {
  // FIPS 180-4 examples / NIST CAVP (cross-checked with hashlib.sha256).
  const struct {
    const char* msg;
    const char* hex;
  } vec[] = {
      {"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
      {"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
      {"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
       "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"},
      {"abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstn"
       "opqrstu",
       "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1"},
  };
  for (const auto& v : vec) {
    const std::string got = sha_hex(v.msg);
    CHECK_MSG(got == v.hex, std::string("sha256(\"") + v.msg + "\") = " + got);
  }

  // One million 'a': one shot and in 1000 updates of 1000 bytes.
  const std::string mil(1000000, 'a');
  const char* mil_hex = "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0";
  CHECK(sha_hex(mil) == mil_hex);
  {
    nfhep::detail::Sha256 s;
    for (int i = 0; i < 1000; ++i) s.update(mil.data() + 1000 * i, 1000);
    CHECK(nfhep::detail::to_hex(s.finish()) == mil_hex);
  }

  // Lengths around the padding boundaries (55: length fits the block, 56: it does not, 64: exactly one
  // block), hashlib.sha256(bytes((i * 37 + 11) & 0xFF for i in range(n))).hexdigest().
  const struct {
    std::size_t n;
    const char* hex;
  } lens[] = {
      {55, "2900465fcb533e05a158fd2b3be0e5e3b03740d83060aa3580e0d98a96bf2384"},
      {56, "31454ff48ef36af2f08fd511bdc37d9d5855ac23e992e5ff5445cb6b7674a674"},
      {63, "5f6401b96532c36de4e65beec0409b69b1d181864c8009b7a04f43e5d56350d1"},
      {64, "94eb5de4943613fd048dc93393ab06877405faa39c11f53e9386083339833e7e"},
      {65, "fc518669b6eb4b4dd91827ecacef86689c725bd5bab888fd3b26dbb196eec954"},
      {119, "b0dc41b1a384e2f1203f0351b38fbeaafceef577ce1191d5bfc25da39f721eae"},
      {120, "5df24dd802ac26132ce608dcb5f09841eef039ee0f152acf98d26d17fe4e88e6"},
      {127, "0fe729ff19257bd6fec853acc2ea355f6b34b58e6c0f684c3e188fcdfcd9baae"},
      {128, "0aedd4856f8eba0963627336ad5144a9a7dbe12498e6066f0165fc97d8ddee4c"},
      {129, "4f1757ae4bffbae86d775b831765b75af154d52f7deaa46dd378051a2d3ad57f"},
  };
  for (const auto& l : lens) {
    const std::string m = pattern(l.n);
    const std::string one = sha_hex(m);
    CHECK_MSG(one == l.hex, "sha256(pattern(" + std::to_string(l.n) + ")) = " + one);
    // split in two at every offset, and in three around every offset
    for (std::size_t a = 0; a <= l.n; ++a) {
      nfhep::detail::Sha256 s;
      s.update(m.data(), a);
      s.update(m.data() + a, l.n - a);
      const std::string two = nfhep::detail::to_hex(s.finish());
      CHECK_MSG(two == l.hex, "n = " + std::to_string(l.n) + " split at " + std::to_string(a));
      if (a >= 1 && a + 1 <= l.n) {
        nfhep::detail::Sha256 t;
        t.update(m.data(), a - 1);
        t.update(m.data() + a - 1, 0);
        t.update(m.data() + a - 1, 2);
        t.update(m.data() + a + 1, l.n - a - 1);
        CHECK_MSG(nfhep::detail::to_hex(t.finish()) == l.hex, "n = " + std::to_string(l.n) + " 3-split at " +
                                                                   std::to_string(a));
      }
    }
    // byte by byte
    nfhep::detail::Sha256 s;
    for (char c : m) s.update(&c, 1);
    CHECK(nfhep::detail::to_hex(s.finish()) == l.hex);
  }
  // every length 0..200 one-shot vs byte-by-byte (the buffering logic at every fill level)
  for (std::size_t n = 0; n <= 200; ++n) {
    const std::string m = pattern(n);
    nfhep::detail::Sha256 s;
    for (char c : m) s.update(&c, 1);
    CHECK_MSG(nfhep::detail::to_hex(s.finish()) == sha_hex(m), "n = " + std::to_string(n));
  }
  CHECK(nfhep::detail::to_hex(std::array<std::uint8_t, 32>{{0x00, 0x0f, 0xf0, 0xff}}) ==
        "000ff0ff00000000000000000000000000000000000000000000000000000000");
}

// ===================================================================================================
// The strict JSON reader
// ===================================================================================================

namespace json = nfhep::detail::json;

bool parses(const std::string& s, int depth = 64) {
  try {
    json::parse(s, depth);
    return true;
  } catch (const json::ParseError&) {
    return false;
  }
}

// Refused with a ParseError (not another exception, not accepted); returns the error's offset.
long long refused(const std::string& s, std::string* msg = nullptr, int depth = 64) {
  try {
    json::parse(s, depth);
  } catch (const json::ParseError& e) {
    if (msg) *msg = e.what();
    return static_cast<long long>(e.offset());
  } catch (...) {
    return -2;
  }
  return -1;
}

std::string show(const std::string& s) {
  std::string o;
  for (unsigned char c : s) {
    if (c >= 0x20 && c < 0x7f) {
      o += static_cast<char>(c);
    } else {
      char b[8];
      std::snprintf(b, sizeof b, "\\x%02x", c);
      o += b;
    }
  }
  return o.size() > 80 ? o.substr(0, 80) + "..." : o;
}

#define CHECK_PARSES(s) CHECK_MSG(parses(s), "refused: " + show(s))
#define CHECK_REFUSED(s) CHECK_MSG(refused(s) >= 0, "not refused with ParseError: " + show(s))

// The safetensors container around a header text (8-byte little-endian length + header, no data).
std::vector<unsigned char> container(const std::string& header) {
  std::vector<unsigned char> b(8 + header.size());
  for (int i = 0; i < 8; ++i) b[i] = static_cast<unsigned char>(std::uint64_t{header.size()} >> (8 * i));
  std::memcpy(b.data() + 8, header.data(), header.size());
  return b;
}

std::string format_error(const std::string& header) {
  const auto b = container(header);
  try {
    nfhep::Flow::from_bytes(b.data(), b.size(), "unit");
  } catch (const nfhep::FormatError& e) {
    return e.what();
  } catch (const std::exception& e) {
    return std::string("WRONG TYPE: ") + e.what();
  }
  return "ACCEPTED";
}

void test_json() {
  using T = json::Value::Type;
  // -- a nested document: types, order, accessors --------------------------------------------------
  {
    const json::Value v = json::parse(
        " \t\r\n{\"a\": [1, -2.5e+3, {\"b\": null}, [], {}], \"c\": true, \"d\": false, \"e\": \"x\", \"\": 0}\n ");
    CHECK(v.is_object());
    const auto& o = v.as_object();
    CHECK(o.size() == 5);
    CHECK(o[0].first == "a" && o[1].first == "c" && o[2].first == "d" && o[3].first == "e" && o[4].first.empty());
    const auto& a = v.find("a")->as_array();
    CHECK(a.size() == 5);
    CHECK(a[0].is_integer() && a[0].as_int64() == 1 && a[0].as_double() == 1.0);
    CHECK(a[1].is_number() && !a[1].is_integer() && a[1].as_double() == -2500.0);
    CHECK(a[2].is_object() && a[2].find("b") && a[2].find("b")->is_null());
    CHECK(a[3].is_array() && a[3].as_array().empty() && a[4].is_object() && a[4].as_object().empty());
    CHECK(v.find("c")->as_bool() && !v.find("d")->as_bool());
    CHECK(v.find("e")->as_string() == "x");
    CHECK(v.find("zz") == nullptr && a[0].find("a") == nullptr);
    CHECK(v.find("")->type() == T::number);
    bool threw = false;
    try {
      (void)a[0].as_string();
    } catch (const std::logic_error&) {
      threw = true;
    }
    CHECK(threw);
    threw = false;
    try {
      (void)a[1].as_int64();  // a number, but not an integer literal
    } catch (const std::logic_error&) {
      threw = true;
    }
    CHECK(threw);
    CHECK(std::string(json::Value::type_name(T::object)) == "object");
  }
  // top-level scalars are documents too (RFC 8259 section 2)
  CHECK(json::parse("1").as_int64() == 1);
  CHECK(json::parse("\"s\"").as_string() == "s");
  CHECK(json::parse(" null ").is_null());
  CHECK(json::parse("true").as_bool());

  // -- escapes and UTF-8 ---------------------------------------------------------------------------
  CHECK(json::parse("\"\\\"\\\\\\/\\b\\f\\n\\r\\t\"").as_string() == "\"\\/\b\f\n\r\t");
  CHECK(json::parse("\"\\u0041\\u00e9\\u00E9\\u20ac\"").as_string() == "A\xc3\xa9\xc3\xa9\xe2\x82\xac");
  CHECK(json::parse("\"\\ud83d\\ude00\"").as_string() == "\xf0\x9f\x98\x80");  // U+1F600, surrogate pair
  CHECK(json::parse("\"\\uD800\\uDC00\\uDBFF\\uDFFF\"").as_string() == "\xf0\x90\x80\x80\xf4\x8f\xbf\xbf");
  CHECK(json::parse("\"\\u0000\"").as_string() == std::string(1, '\0'));
  CHECK(json::parse("\"\\u007f\\u0080\\u07ff\\u0800\\uffff\"").as_string() ==
        "\x7f\xc2\x80\xdf\xbf\xe0\xa0\x80\xef\xbf\xbf");
  // raw UTF-8 at the edges of every valid range
  for (const char* s : {"\xc2\x80", "\xdf\xbf", "\xe0\xa0\x80", "\xed\x9f\xbf", "\xee\x80\x80", "\xef\xbf\xbf",
                        "\xf0\x90\x80\x80", "\xf4\x8f\xbf\xbf", "\xc3\xa9t\xc3\xa9", "\x7f"}) {
    const std::string doc = std::string("\"") + s + "\"";
    CHECK_MSG(parses(doc) && json::parse(doc).as_string() == s, "raw UTF-8 " + show(s));
  }
  // keys compare after decoding
  CHECK_REFUSED("{\"a\": 1, \"\\u0061\": 2}");
  CHECK(json::parse("{\"\\u00e9\": 1}").find("\xc3\xa9") != nullptr);

  // -- numbers ---------------------------------------------------------------------------------------
  {
    const auto num = [](const char* s) { return json::parse(s); };
    CHECK(num("0").is_integer() && num("0").as_int64() == 0);
    CHECK(num("-0").is_integer() && num("-0").as_int64() == 0 && std::signbit(num("-0").as_double()));
    CHECK(num("1e10").as_double() == 1e10 && !num("1e10").is_integer());
    CHECK(num("1E+2").as_double() == 100 && num("1e-2").as_double() == 0.01);
    CHECK(num("-1.5e-3").as_double() == -1.5e-3);
    CHECK(num("0.1").as_double() == 0.1);  // correctly rounded (from_chars)
    CHECK(num("1.0").as_double() == 1.0 && !num("1.0").is_integer());
    CHECK(num("9223372036854775807").as_int64() == std::numeric_limits<std::int64_t>::max());
    CHECK(num("-9223372036854775808").as_int64() == std::numeric_limits<std::int64_t>::min());
    CHECK(!num("9223372036854775808").is_integer() && num("9223372036854775808").as_double() == 0x1p63);
    CHECK(num("123456789012345678").as_int64() == 123456789012345678ll);
    CHECK(num("1.7976931348623157e308").as_double() == DBL_MAX);
    CHECK(num("2.2250738585072014e-308").as_double() == DBL_MIN);
    CHECK(num("5e-324").as_double() == std::numeric_limits<double>::denorm_min());  // subnormals fit
    CHECK(num("0e999999").as_double() == 0.0);                                       // exactly zero
    CHECK(num("100000000000000000000").as_double() == 1e20 && !num("100000000000000000000").is_integer());
  }
  // a number that does not fit a double is refused: overflow, and underflow below the smallest subnormal
  for (const char* s : {"1e400", "-1e400", "1.7976931348623159e308", "1e-400", "2e-324"}) CHECK_REFUSED(s);
  CHECK_REFUSED("1" + std::string(400, '0'));

  // -- nesting -------------------------------------------------------------------------------------
  const auto nest = [](int n, char o, char c) { return std::string(n, o) + std::string(n, c); };
  CHECK_PARSES(nest(64, '[', ']'));
  CHECK_REFUSED(nest(65, '[', ']'));
  {
    std::string objs;
    for (int i = 0; i < 64; ++i) objs += "{\"k\":";
    objs += "1" + std::string(64, '}');
    CHECK_PARSES(objs);
    CHECK_REFUSED("[" + objs + "]");
  }
  CHECK(parses("[[1]]", 2) && !parses("[[[1]]]", 2) && parses("1", 0) && !parses("[]", 0));
  {
    std::string msg;
    CHECK(refused(std::string(1000000, '['), &msg) == 64);  // no stack overflow: stops at the limit
    CHECK_MSG(msg.find("nesting deeper than 64") != std::string::npos, msg);
  }

  // -- refusals, each with a ParseError ----------------------------------------------------------
  const char* bad[] = {
      // empty, truncated, trailing garbage
      "", " ", "[", "{", "[1", "{\"a\":1", "{\"a\"", "{\"a\":", "[1] x", "[1]]", "{}{}", "[] []", "1 2", "nul",
      // trailing / missing commas, wrong separators
      "[1,]", "{\"a\":1,}", "[,1]", "{,}", "[1 2]", "{\"a\" 1}", "{\"a\":1 \"b\":2}", "[1:2]", "{\"a\",1}",
      // keys must be strings in double quotes
      "{a:1}", "{'a':1}", "{1:1}", "{null:1}", "['a']",
      // numbers
      "01", "[01]", "-01", "00", "[1.]", "[.5]", "[1e]", "[1e+]", "[1E-]", "[+1]", "[-]", "-", "[--1]", "[0x10]",
      "[1.5.2]", "[1e5e5]", "[ 1 .5]", "\xd9\xa1",
      // non-finite literals
      "NaN", "[NaN]", "[nan]", "Infinity", "[-Infinity]", "[inf]",
      // bad literals
      "[tru]", "[True]", "[nulll]", "[falsee]", "[FALSE]", "nil", "undefined",
      // comments, BOM, non-JSON whitespace
      "// c\n[]", "[/*c*/1]", "[] // c", "\xef\xbb\xbf[]", "[\f]", "[\v1]", "[\xc2\xa0" "1]",
      // strings
      "\"abc", "\"a\\\"", "'a'", "\"a\tb\"", "\"a\nb\"", "\"\x01\"", "\"\x1f\"", "\"\\x41\"", "\"\\a\"", "\"\\U0041\"",
      "\"\\u12\"", "\"\\u12G4\"", "\"\\u\"", "\"\\",
      // surrogates
      "\"\\ud800\"", "\"\\ud800x\"", "\"\\ud800\\u0041\"", "\"\\ud800\\ud800\"", "\"\\udc00\"", "\"\\udfff\\ud800\"",
      "\"\\uDBFF\\n\"", "\"\\ud800\\",
      // invalid UTF-8: stray continuation, overlong, surrogates, > U+10FFFF, truncated, invalid lead bytes
      "\"\x80\"", "\"\xbf\"", "\"\xc0\xaf\"", "\"\xc1\xbf\"", "\"\xe0\x80\xaf\"", "\"\xe0\x9f\xbf\"",
      "\"\xf0\x80\x80\xaf\"", "\"\xf0\x8f\xbf\xbf\"", "\"\xed\xa0\x80\"", "\"\xed\xbf\xbf\"",
      "\"\xed\xa0\xbd\xed\xb8\x80\"", "\"\xf4\x90\x80\x80\"", "\"\xf5\x80\x80\x80\"", "\"\xf8\x88\x80\x80\x80\"",
      "\"\xfe\"", "\"\xff\"", "\"\xc3\"", "\"\xe2\x82\"", "\"\xf0\x9f\x98\"", "\"\xc3(\"", "\"\xe2(\xa1\"",
      "\"\xe2\x82(\"", "\"\xf0\x9f(\x80\"", "\"\xc3", "\"\xf0\x9f\x98",
      // duplicate keys (also nested, and after other members)
      "{\"a\":1,\"a\":2}", "{\"a\":1,\"b\":2,\"a\":1}", "{\"x\":{\"k\":1,\"k\":1}}", "[{\"\":1,\"\":1}]",
  };
  for (const char* s : bad) CHECK_REFUSED(s);
  CHECK_REFUSED(std::string("[1]\0", 4));  // NUL after the value
  CHECK_REFUSED(std::string("\"a\0b\"", 5));  // raw NUL in a string
  CHECK_REFUSED(std::string("[\0]", 3));
  CHECK_PARSES("{\"a\":{\"a\":1},\"b\":{\"a\":1}}");  // the same key in different objects is fine

  // offsets point at the problem
  CHECK(refused("[1,]") == 3);
  CHECK(refused("[1] x") == 4);
  CHECK(refused("[01]") == 2);
  CHECK(refused("{\"a\":1,\"a\":2}") == 7);  // the duplicate key
  CHECK(refused("\"ab\xff\"") == 3);
  {
    std::string msg;
    refused("{\"a\":1,\"a\":2}", &msg);
    CHECK_MSG(msg.find("duplicate object key \"a\"") != std::string::npos, msg);
    refused("\"\\ud800\"", &msg);
    CHECK_MSG(msg.find("lone high surrogate") != std::string::npos, msg);
    refused("[NaN]", &msg);
    CHECK_MSG(msg.find("at byte 1") != std::string::npos, msg);
  }

  // -- through the model-file reader: nfhep::FormatError, never another exception ------------------
  const struct {
    const char* header;
    const char* want;  // in the message
  } files[] = {
      {"{\"a\":1,}", "not valid UTF-8 JSON"},
      {"{\"__metadata__\":{\"nfhep\":\"{}\"},\"__metadata__\":{}}", "duplicate object key"},
      {"{\"__metadata__\":{\"nfhep\":\"\xff\"}}", "not valid UTF-8 JSON"},
      {"{\"__metadata__\":{\"nfhep\":\"\\udc00\"}}", "lone low surrogate"},
      {"{\"x\":NaN}", "not valid UTF-8 JSON"},
      {"{\"x\":01}", "leading zeros"},
      {"{\"x\":1} garbage", "after the JSON value"},
      {"[]", "not a JSON object"},
      {"{}", "not an nfhep model file"},
      {"{\"__metadata__\":{\"nfhep\":\"{\\\"a\\\":1,\\\"a\\\":2}\"}}", "'nfhep' metadata is not valid JSON"},
      {"{\"__metadata__\":{\"nfhep\":\"[1,]\"}}", "'nfhep' metadata is not valid JSON"},
  };
  for (const auto& f : files) {
    const std::string msg = format_error(f.header);
    CHECK_MSG(msg.find(f.want) != std::string::npos, show(f.header) + " -> " + msg);
  }
  {
    std::string deep = "{\"x\":" + nest(100, '[', ']') + "}";
    const std::string msg = format_error(deep);
    CHECK_MSG(msg.find("nesting deeper than") != std::string::npos, msg);
  }
}

// ===================================================================================================
// math/
// ===================================================================================================

// |got - ref| in units of the last place of ref rounded to T (inf/NaN must match exactly), measured from
// the exact value: special.hpp's "within 2 ulp" (of the correctly rounded result, as
// tests/test_kernels_special.py measures it) is at most 2.5 ulp from the exact value.
template <class T>
double ulps(T got, long double ref) {
  if (std::isnan(ref)) return std::isnan(got) ? 0 : 1e30;
  const T r = static_cast<T>(ref);
  if (std::isinf(r) || std::isinf(got)) return got == r ? 0 : 1e30;
  if (std::isnan(got)) return 1e30;
  const T a = std::fabs(r);
  const long double u = static_cast<long double>(std::nextafter(a, std::numeric_limits<T>::infinity())) - a;
  return static_cast<double>(std::fabs(static_cast<long double>(got) - ref) / u);
}

template <class T>
std::vector<T> grid(T lo, T hi, int n) {  // lo..hi linear plus the special values
  std::vector<T> v;
  for (int i = 0; i <= n; ++i) v.push_back(lo + (hi - lo) * static_cast<T>(i) / static_cast<T>(n));
  return v;
}

template <class T>
struct MathCase {
  const char* name;
  T (*f)(T);
  long double (*ref)(long double);
  std::vector<T> xs;
  double max_ulp;
};

long double ref_exp(long double x) { return std::exp(x); }
long double ref_log(long double x) { return std::log(x); }
long double ref_log1p(long double x) { return std::log1p(x); }
long double ref_softplus(long double x) { return std::fmax(x, 0.0L) + std::log1p(std::exp(-std::fabs(x))); }
long double ref_sigmoid(long double x) { return 1 / (1 + std::exp(-x)); }

template <class T>
void test_special(const char* tname) {
  const T inf = std::numeric_limits<T>::infinity(), nan = std::numeric_limits<T>::quiet_NaN();
  const T big = sizeof(T) == 8 ? T(709.7) : T(88.7), tiny = sizeof(T) == 8 ? T(-745.1) : T(-103.9);
  std::vector<T> pos;  // log-spaced positives incl. subnormals and the largest finite value
  for (T x = std::numeric_limits<T>::denorm_min(); x < std::numeric_limits<T>::max() / 3; x *= T(2.718281828))
    pos.push_back(x);
  pos.push_back(std::numeric_limits<T>::max());
  pos.push_back(T(1));
  for (T x : grid<T>(T(0.5), T(2), 1000)) pos.push_back(x);  // around the reduction's split points
  std::vector<T> small = grid<T>(T(-1), T(1), 2001);
  for (T x = T(1e-30); x < T(1); x *= T(3)) {
    small.push_back(x);
    small.push_back(-x);
  }
  std::vector<T> l1p = small;
  for (T x : pos) l1p.push_back(x);
  for (T x : grid<T>(T(-0.999), T(0), 999)) l1p.push_back(x);
  l1p.push_back(T(-1) + std::numeric_limits<T>::epsilon() / 2);
  std::vector<T> all = grid<T>(tiny - 10, big + 10, 20011);
  for (T x : small) all.push_back(x);
  const std::vector<T> unit = grid<T>(T(0), T(1), 4001);
  const std::vector<T> nonpos = grid<T>(sizeof(T) == 8 ? T(-700) : T(-85), T(0), 20011);

  const MathCase<T> cases[] = {
      {"exp", [](T x) { return nfhep::math::exp(x); }, ref_exp, all, 2.5},
      {"exp_nonpos", [](T x) { return nfhep::math::exp_nonpos(x); }, ref_exp, nonpos, 2.5},
      {"log", [](T x) { return nfhep::math::log(x); }, ref_log, pos, 2.5},
      {"log1p", [](T x) { return nfhep::math::log1p(x); }, ref_log1p, l1p, 2.5},
      {"log1p_unit", [](T x) { return nfhep::math::log1p_unit(x); }, ref_log1p, unit, 2.5},
      {"softplus", [](T x) { return nfhep::math::softplus(x); }, ref_softplus, all, 2.5},
      {"sigmoid", [](T x) { return nfhep::math::sigmoid(x); }, ref_sigmoid, all, 2.5},
  };
  for (const auto& c : cases) {
    double worst = 0;
    T at = 0;
    for (T x : c.xs) {
      const double e = ulps<T>(c.f(x), c.ref(static_cast<long double>(x)));
      if (e > worst) {
        worst = e;
        at = x;
      }
    }
    char b[160];
    std::snprintf(b, sizeof b, "%s<%s>: %.3g ulp at %.9g (bound %g)", c.name, tname, worst,
                  static_cast<double>(at), c.max_ulp);
    CHECK_MSG(worst <= c.max_ulp, b);
    std::printf("  %s\n", b);
  }
  // special values (DESIGN.md: NaN/inf handled, no -ffast-math)
  using nfhep::math::exp;
  using nfhep::math::log;
  CHECK(exp(-inf) == 0 && exp(inf) == inf && std::isnan(exp(nan)) && exp(T(0)) == 1);
  CHECK(exp(big + 1) == inf && exp(tiny - 1) == 0);
  CHECK(log(T(0)) == -inf && log(-T(0)) == -inf && std::isnan(log(T(-1))) && log(inf) == inf);
  CHECK(std::isnan(log(nan)) && std::isnan(log(-inf)) && log(T(1)) == 0);
  CHECK(nfhep::math::log1p(T(-1)) == -inf && nfhep::math::log1p(inf) == inf && std::isnan(nfhep::math::log1p(nan)));
  CHECK(std::isnan(nfhep::math::log1p(T(-2))) && nfhep::math::log1p(T(0)) == 0);
  CHECK(nfhep::math::softplus(inf) == inf && nfhep::math::softplus(-inf) == 0 &&
        std::isnan(nfhep::math::softplus(nan)));
  CHECK(nfhep::math::softplus(T(1e30)) == T(1e30) &&
        std::isfinite(nfhep::math::softplus(-std::numeric_limits<T>::max())));
  CHECK(nfhep::math::sigmoid(inf) == 1 && nfhep::math::sigmoid(-inf) == 0 && std::isnan(nfhep::math::sigmoid(nan)));
  CHECK(nfhep::math::sigmoid(T(0)) == T(0.5));
  CHECK(nfhep::math::exp_nonpos(T(-1e30)) >= 0 && nfhep::math::exp_nonpos(T(-1e30)) < T(1e-37) &&
        std::isnan(nfhep::math::exp_nonpos(nan)) && nfhep::math::exp_nonpos(T(0)) == 1);
}

template <class T>
void test_affine_rqs(const char* tname, T tol) {
  // affine: inverse of forward, log-determinants
  for (T x : {T(-3), T(0), T(0.7), T(1e3)})
    for (T s : {T(-2), T(0), T(1.5)}) {
      T y, lf, xb, li;
      nfhep::math::affine_forward(x, s, T(0.25), y, lf);
      nfhep::math::affine_inverse(y, s, T(0.25), xb, li);
      CHECK_MSG(std::fabs(xb - x) <= tol * (1 + std::fabs(x)) && lf == s && li == -s, tname);
    }
  for (T u : {T(-1e30), T(-5), T(-0.1), T(0), T(0.1), T(5), T(1e30)}) {
    const T c = nfhep::math::soft_clamp(u, T(3));
    const long double ref = 3 * std::tanh(static_cast<long double>(u) / 3);
    CHECK_MSG(std::fabs(c) <= T(3) && std::fabs(static_cast<long double>(c) - ref) <= 8 * tol, tname);
  }
  CHECK(std::isnan(nfhep::math::soft_clamp(std::numeric_limits<T>::quiet_NaN(), T(3))));

  // RQS: L = 4 lanes, K = 6 bins on [-3, 3], random parameters (the same float-representable values for
  // both precisions, so the float spline can be compared with the double one).
  constexpr int L = 4;
  const int K = 6, P = 3 * K - 1;
  std::mt19937_64 rng(42);
  std::normal_distribution<double> nd(0.0, 1.5);
  std::vector<double> prm_d(P * L);
  for (auto& p : prm_d) p = static_cast<float>(nd(rng));
  const auto spline = [&](auto zero, bool inverse, const auto* in, auto* out, auto* lad) {
    using U = decltype(zero);
    const nfhep::math::RqsConfig<U> cfg{K, U(3), U(1e-3), U(1e-3), U(1e-3)};
    std::vector<U> prm(prm_d.begin(), prm_d.end()), scratch(nfhep::math::rqs_scratch_size(K, L));
    if (inverse)
      nfhep::math::rqs_block<U, L, true>(cfg, in, prm.data(), scratch.data(), out, lad);
    else
      nfhep::math::rqs_block<U, L, false>(cfg, in, prm.data(), scratch.data(), out, lad);
  };
  const auto fwd = [&](const T* in, T* out, T* lad) { spline(T(0), false, in, out, lad); };
  const auto inv = [&](const T* in, T* out, T* lad) { spline(T(0), true, in, out, lad); };
  // Round trip measured where it is well conditioned: y-space backward error |fwd(inv(fwd(x))) - fwd(x)|
  // (the x error itself is that divided by the slope, which the random spline makes as small as e^-8.6),
  // and the inverse's log-determinant against the forward one at the recovered point.
  double worst_rt = 0, worst_lad = 0, worst_ref_y = 0, worst_ref_lad = 0, worst_fd = 0;
  bool monotone = true;
  T prev[L];
  for (int l = 0; l < L; ++l) prev[l] = -std::numeric_limits<T>::infinity();
  const int N = 601;
  for (int i = 0; i < N; ++i) {
    T x[L], y[L], lf[L], xb[L], li[L], yb[L], lb[L];
    double xd[L], yd[L], ld[L];
    for (int l = 0; l < L; ++l) x[l] = T(-3) + T(6) * static_cast<T>(i) / static_cast<T>(N - 1);
    fwd(x, y, lf);
    inv(y, xb, li);
    fwd(xb, yb, lb);
    for (int l = 0; l < L; ++l) xd[l] = x[l];
    spline(0.0, false, xd, yd, ld);  // the double spline at the same x
    for (int l = 0; l < L; ++l) {
      worst_rt = std::fmax(worst_rt, std::fabs(static_cast<double>(yb[l] - y[l])));
      worst_lad = std::fmax(worst_lad, std::fabs(static_cast<double>(lb[l] + li[l])));
      worst_ref_y = std::fmax(worst_ref_y, std::fabs(y[l] - yd[l]));
      worst_ref_lad = std::fmax(worst_ref_lad, std::fabs(lf[l] - ld[l]));
      monotone = monotone && y[l] >= prev[l] && y[l] >= T(-3) && y[l] <= T(3);
      prev[l] = y[l];
    }
    if (sizeof(T) == 8 && i > 0 && i < N - 1) {  // log-determinant vs a central difference (double only)
      const T h = T(1e-7);
      T xp[L], xm[L], yp[L], ym[L], dummy[L];
      for (int l = 0; l < L; ++l) {
        xp[l] = x[l] + h;
        xm[l] = x[l] - h;
      }
      fwd(xp, yp, dummy);
      fwd(xm, ym, dummy);
      for (int l = 0; l < L; ++l) {
        // the slope, not its log: where the spline is nearly flat (slope ~ e^-8.6) the difference
        // quotient's rounding error (~ eps |y| / h) is large relative to the slope
        const double fd = (static_cast<double>(yp[l]) - ym[l]) / (static_cast<double>(xp[l]) - xm[l]);
        const double slope = std::exp(static_cast<double>(lf[l]));
        worst_fd = std::fmax(worst_fd, std::fabs(fd - slope) / (1 + slope));
      }
    }
  }
  char b[240];
  std::snprintf(b, sizeof b,
                "rqs<%s>: |fwd(inv(y)) - y| <= %.3g, |lad_f + lad_i| <= %.3g, vs double: y %.3g lad %.3g, "
                "|exp(lad) - FD| / (1 + exp(lad)) <= %.3g",
                tname, worst_rt, worst_lad, worst_ref_y, worst_ref_lad, worst_fd);
  CHECK_MSG(worst_rt <= 8 * tol && worst_lad <= 50 * tol, b);
  CHECK_MSG(worst_ref_y <= 8 * tol && worst_ref_lad <= 500 * tol, b);
  CHECK_MSG(worst_fd <= 1e-6, b);
  std::printf("  %s\n", b);
  CHECK_MSG(monotone, std::string("rqs<") + tname + ">: not increasing inside [-B, B]");
  // knots: -B -> -B and B -> B; tails and NaN: identity with log-determinant 0
  {
    const T nan = std::numeric_limits<T>::quiet_NaN(), inf = std::numeric_limits<T>::infinity();
    T x[L] = {T(-3), T(3), T(-3.5), T(1e30)}, y[L], lad[L];
    fwd(x, y, lad);
    CHECK(std::fabs(y[0] + 3) <= 4 * tol && std::fabs(y[1] - 3) <= 4 * tol);
    CHECK(y[2] == T(-3.5) && lad[2] == 0 && y[3] == T(1e30) && lad[3] == 0);
    T z[L] = {nan, inf, -inf, T(0)};
    fwd(z, y, lad);
    CHECK(std::isnan(y[0]) && lad[0] == 0 && y[1] == inf && lad[1] == 0 && y[2] == -inf && lad[2] == 0);
    CHECK(std::isfinite(y[3]) && std::isfinite(lad[3]));
    inv(z, y, lad);
    CHECK(std::isnan(y[0]) && lad[0] == 0 && y[1] == inf && y[2] == -inf && std::isfinite(y[3]));
  }
}

}  // namespace

int main() {
  test_philox();
  test_sha256();
  test_json();
  test_special<double>("double");
  test_special<float>("float");
  test_affine_rqs<double>("double", 1e-12);
  test_affine_rqs<float>("float", 2e-6f);
  std::printf("test_units: %lld checks, %lld failed\n", g_checks, g_failed);
  return g_failed ? 1 : 0;
}
