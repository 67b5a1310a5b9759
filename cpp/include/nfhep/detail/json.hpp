// nfhep/detail/json.hpp (interim): a small header-only JSON reader for the model-file header. Interim:
// replaced by the strict parser of cpp/src/json.cpp (full UTF-8 validation, fuzzed) in the same series.
#pragma once
#include <charconv>
#include <cmath>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>
#include "nfhep/config.hpp"
namespace nfhep::detail::json {
class ParseError : public std::runtime_error { public: ParseError(const std::string& w, std::size_t off) : std::runtime_error(w + " at byte " + std::to_string(off)), off_(off) {} std::size_t offset() const { return off_; } private: std::size_t off_; };
class Value {
 public:
  enum class Type { null, boolean, number, string, array, object };
  Type type() const { return t_; }
  bool is_null() const { return t_ == Type::null; } bool is_bool() const { return t_ == Type::boolean; } bool is_number() const { return t_ == Type::number; }
  bool is_string() const { return t_ == Type::string; } bool is_array() const { return t_ == Type::array; } bool is_object() const { return t_ == Type::object; }
  bool as_bool() const { chk(Type::boolean); return b_; } double as_double() const { chk(Type::number); return d_; }
  bool is_integer() const { return t_ == Type::number && int_; } std::int64_t as_int64() const { if (!is_integer()) throw std::logic_error("not int"); return i_; }
  const std::string& as_string() const { chk(Type::string); return s_; }
  const std::vector<Value>& as_array() const { chk(Type::array); return a_; }
  const std::vector<std::pair<std::string, Value>>& as_object() const { chk(Type::object); return o_; }
  const Value* find(std::string_view k) const { if (t_ != Type::object) return nullptr; for (auto& kv : o_) if (kv.first == k) return &kv.second; return nullptr; }
  static const char* type_name(Type t) { static const char* n[] = {"null","boolean","number","string","array","object"}; return n[int(t)]; }
  Type t_ = Type::null; bool b_ = false; double d_ = 0; bool int_ = false; std::int64_t i_ = 0; std::string s_; std::vector<Value> a_; std::vector<std::pair<std::string, Value>> o_;
 private:
  void chk(Type t) const { if (t_ != t) throw std::logic_error("json type"); }
};
namespace shim {
struct P { std::string_view s; std::size_t i = 0; int depth = 0;
  [[noreturn]] void fail(const char* m) { throw ParseError(m, i); }
  void ws() { while (i < s.size() && (s[i]==' '||s[i]=='\t'||s[i]=='\n'||s[i]=='\r')) ++i; }
  Value val() { ws(); if (i >= s.size()) fail("eof"); char c = s[i]; Value v;
    if (c=='{') { if (++depth > 64) fail("deep"); ++i; v.t_ = Value::Type::object; ws(); if (i<s.size() && s[i]=='}') { ++i; --depth; return v; }
      for (;;) { ws(); if (i>=s.size()||s[i]!='"') fail("key"); std::string k = str(); for (auto& kv : v.o_) if (kv.first==k) fail("dup"); ws(); if (i>=s.size()||s[i]!=':') fail(":"); ++i; Value x = val(); v.o_.emplace_back(std::move(k), std::move(x)); ws(); if (i<s.size()&&s[i]==',') {++i; continue;} if (i<s.size()&&s[i]=='}') {++i; break;} fail("obj"); } --depth; return v; }
    if (c=='[') { if (++depth > 64) fail("deep"); ++i; v.t_ = Value::Type::array; ws(); if (i<s.size() && s[i]==']') { ++i; --depth; return v; }
      for (;;) { v.a_.push_back(val()); ws(); if (i<s.size()&&s[i]==',') {++i; continue;} if (i<s.size()&&s[i]==']') {++i; break;} fail("arr"); } --depth; return v; }
    if (c=='"') { v.t_ = Value::Type::string; v.s_ = str(); return v; }
    if (s.substr(i,4)=="true") { i+=4; v.t_=Value::Type::boolean; v.b_=true; return v; }
    if (s.substr(i,5)=="false") { i+=5; v.t_=Value::Type::boolean; return v; }
    if (s.substr(i,4)=="null") { i+=4; return v; }
    std::size_t b = i; if (s[i]=='-') ++i; bool frac=false; while (i<s.size() && (isdigit((unsigned char)s[i])||s[i]=='.'||s[i]=='e'||s[i]=='E'||s[i]=='+'||s[i]=='-')) { if (!isdigit((unsigned char)s[i])) frac=true; ++i; }
    if (i==b) fail("value"); v.t_ = Value::Type::number; const char* f = s.data()+b; const char* e = s.data()+i;
    auto r = std::from_chars(f, e, v.d_); if (r.ec != std::errc() || r.ptr != e || !std::isfinite(v.d_)) fail("num");
    if (!frac) { auto r2 = std::from_chars(f, e, v.i_); v.int_ = r2.ec == std::errc() && r2.ptr == e; } return v; }
  unsigned hex4() { unsigned v=0; for (int k=0;k<4;++k) { char h=s[i++]; v<<=4; if (h>='0'&&h<='9') v|=h-'0'; else if (h>='a'&&h<='f') v|=h-'a'+10; else if (h>='A'&&h<='F') v|=h-'A'+10; else fail("hex"); } return v; }
  std::string str() { ++i; std::string o; while (i < s.size() && s[i] != '"') { if (s[i]=='\\') { ++i; if (i>=s.size()) fail("esc"); char e=s[i++]; switch(e){case 'n':o+='\n';break;case 't':o+='\t';break;case 'r':o+='\r';break;case 'b':o+='\b';break;case 'f':o+='\f';break;case '/':o+='/';break;case '\\':o+='\\';break;case '"':o+='"';break;
      case 'u': { if (i+4>s.size()) fail("u"); unsigned cp=hex4();  if (cp>=0xD800&&cp<0xDC00) { if (s.substr(i,2)!="\\u") fail("sur"); i+=2; if (i+4>s.size()) fail("u"); unsigned lo=hex4(); if (lo<0xDC00||lo>0xDFFF) fail("sur"); cp=0x10000+((cp-0xD800)<<10)+(lo-0xDC00);} 
        if (cp<0x80) o+=char(cp); else if (cp<0x800) {o+=char(0xC0|(cp>>6)); o+=char(0x80|(cp&63));} else if (cp<0x10000) {o+=char(0xE0|(cp>>12)); o+=char(0x80|((cp>>6)&63)); o+=char(0x80|(cp&63));} else {o+=char(0xF0|(cp>>18)); o+=char(0x80|((cp>>12)&63)); o+=char(0x80|((cp>>6)&63)); o+=char(0x80|(cp&63));} break; }
      default: fail("esc"); } } else o += s[i++]; } if (i>=s.size()) fail("unterminated"); ++i; return o; }
};
}
inline Value parse(std::string_view text, int = 64) { shim::P p{text}; Value v = p.val(); p.ws(); if (p.i != text.size()) p.fail("trailing"); return v; }
}
