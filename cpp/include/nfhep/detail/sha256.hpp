// nfhep/detail/sha256.hpp: SHA-256 (FIPS 180-4) for the model file's tensor checksum.
//
// Streaming: update() any number of times with any split of the message (including empty pieces), then
// finish() once; it pads (0x80, zeros to 56 mod 64, the bit length big-endian) and returns the digest.
// A Sha256 is single-use: finish() leaves it in a padded state, so do not update() or finish() it again.
// Messages up to 2^61 - 1 bytes (the bit length is kept in 64 bits). to_hex() gives lowercase hex.
// Tested: cpp/tests/test_units.cpp (FIPS 180-4 / NIST vectors incl. one million 'a', every split of
// messages of 55, 56, 63, 64, 65, 119, 120, 127, 128, 129 bytes, byte-by-byte updates of every length 0..200),
// tests/test_cpp_units.py; the Python writer uses hashlib, so every saved model cross-checks it as well.
#pragma once
#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <string>
namespace nfhep::detail {
class Sha256 {
 public:
  void update(const void* data, std::size_t n) { const unsigned char* p = static_cast<const unsigned char*>(data); len_ += n; while (n) { std::size_t k = std::min<std::size_t>(64 - fill_, n); std::memcpy(buf_ + fill_, p, k); fill_ += k; p += k; n -= k; if (fill_ == 64) { block(buf_); fill_ = 0; } } }
  std::array<std::uint8_t, 32> finish() { std::uint64_t bits = len_ * 8; unsigned char pad = 0x80; update(&pad, 1); unsigned char z = 0; while (fill_ != 56) update(&z, 1); unsigned char L[8]; for (int i = 0; i < 8; ++i) L[i] = (unsigned char)(bits >> (56 - 8 * i)); update(L, 8); std::array<std::uint8_t, 32> o; for (int i = 0; i < 8; ++i) for (int j = 0; j < 4; ++j) o[4 * i + j] = (std::uint8_t)(h_[i] >> (24 - 8 * j)); return o; }
 private:
  static std::uint32_t rotr(std::uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }
  void block(const unsigned char* b) { static const std::uint32_t K[64] = {0x428a2f98,0x71374491,0xb5c0fbcf,0xe9b5dba5,0x3956c25b,0x59f111f1,0x923f82a4,0xab1c5ed5,0xd807aa98,0x12835b01,0x243185be,0x550c7dc3,0x72be5d74,0x80deb1fe,0x9bdc06a7,0xc19bf174,0xe49b69c1,0xefbe4786,0x0fc19dc6,0x240ca1cc,0x2de92c6f,0x4a7484aa,0x5cb0a9dc,0x76f988da,0x983e5152,0xa831c66d,0xb00327c8,0xbf597fc7,0xc6e00bf3,0xd5a79147,0x06ca6351,0x14292967,0x27b70a85,0x2e1b2138,0x4d2c6dfc,0x53380d13,0x650a7354,0x766a0abb,0x81c2c92e,0x92722c85,0xa2bfe8a1,0xa81a664b,0xc24b8b70,0xc76c51a3,0xd192e819,0xd6990624,0xf40e3585,0x106aa070,0x19a4c116,0x1e376c08,0x2748774c,0x34b0bcb5,0x391c0cb3,0x4ed8aa4a,0x5b9cca4f,0x682e6ff3,0x748f82ee,0x78a5636f,0x84c87814,0x8cc70208,0x90befffa,0xa4506ceb,0xbef9a3f7,0xc67178f2};
    std::uint32_t w[64]; for (int i = 0; i < 16; ++i) w[i] = (std::uint32_t)b[4*i] << 24 | (std::uint32_t)b[4*i+1] << 16 | (std::uint32_t)b[4*i+2] << 8 | b[4*i+3];
    for (int i = 16; i < 64; ++i) { std::uint32_t s0 = rotr(w[i-15],7)^rotr(w[i-15],18)^(w[i-15]>>3), s1 = rotr(w[i-2],17)^rotr(w[i-2],19)^(w[i-2]>>10); w[i] = w[i-16]+s0+w[i-7]+s1; }
    std::uint32_t a=h_[0],bb=h_[1],c=h_[2],d=h_[3],e=h_[4],f=h_[5],g=h_[6],h=h_[7];
    for (int i = 0; i < 64; ++i) { std::uint32_t S1=rotr(e,6)^rotr(e,11)^rotr(e,25), ch=(e&f)^(~e&g), t1=h+S1+ch+K[i]+w[i], S0=rotr(a,2)^rotr(a,13)^rotr(a,22), mj=(a&bb)^(a&c)^(bb&c), t2=S0+mj; h=g; g=f; f=e; e=d+t1; d=c; c=bb; bb=a; a=t1+t2; }
    h_[0]+=a; h_[1]+=bb; h_[2]+=c; h_[3]+=d; h_[4]+=e; h_[5]+=f; h_[6]+=g; h_[7]+=h; }
  std::uint32_t h_[8] = {0x6a09e667,0xbb67ae85,0x3c6ef372,0xa54ff53a,0x510e527f,0x9b05688c,0x1f83d9ab,0x5be0cd19};
  unsigned char buf_[64]; std::size_t fill_ = 0; std::uint64_t len_ = 0;
};
inline std::string to_hex(const std::array<std::uint8_t, 32>& d) { static const char* x = "0123456789abcdef"; std::string s; for (auto c : d) { s += x[c >> 4]; s += x[c & 15]; } return s; }
}
