// The strict JSON reader of nfhep/detail/json.hpp.
#include "nfhep/detail/json.hpp"

#include <charconv>
#include <cmath>
#include <string>
#include <system_error>
#include <unordered_set>

namespace nfhep::detail::json {

ParseError::ParseError(const std::string& what, std::size_t offset)
    : std::runtime_error(what + " at byte " + std::to_string(offset)), offset_(offset) {}

namespace {
[[noreturn]] void wrong(const char* want, Value::Type got) {
  throw std::logic_error(std::string("json::Value: not ") + want + " but " + Value::type_name(got));
}
}  // namespace

bool Value::as_bool() const {
  if (type_ != Type::boolean) wrong("a boolean", type_);
  return bool_;
}
double Value::as_double() const {
  if (type_ != Type::number) wrong("a number", type_);
  return number_;
}
std::int64_t Value::as_int64() const {
  if (!is_integer()) wrong("an integer", type_);
  return int_;
}
const std::string& Value::as_string() const {
  if (type_ != Type::string) wrong("a string", type_);
  return string_;
}
const std::vector<Value>& Value::as_array() const {
  if (type_ != Type::array) wrong("an array", type_);
  return array_;
}
const std::vector<std::pair<std::string, Value>>& Value::as_object() const {
  if (type_ != Type::object) wrong("an object", type_);
  return object_;
}
const Value* Value::find(std::string_view key) const {
  if (type_ != Type::object) return nullptr;
  for (const auto& kv : object_)
    if (kv.first == key) return &kv.second;
  return nullptr;
}
const char* Value::type_name(Type t) {
  switch (t) {
    case Type::null:
      return "null";
    case Type::boolean:
      return "boolean";
    case Type::number:
      return "number";
    case Type::string:
      return "string";
    case Type::array:
      return "array";
    case Type::object:
      return "object";
  }
  return "?";
}

class Parser {
 public:
  Parser(std::string_view s, int max_depth) : s_(s), max_depth_(max_depth) {}

  Value document() {
    Value v = value(0);
    ws();
    if (i_ != s_.size()) fail("unexpected characters after the JSON value");
    return v;
  }

 private:
  std::string_view s_;
  std::size_t i_ = 0;
  int max_depth_;

  [[noreturn]] void fail(const std::string& what) const { throw ParseError(what, i_); }
  bool at_end() const { return i_ >= s_.size(); }
  unsigned char peek() const { return static_cast<unsigned char>(s_[i_]); }

  void ws() {
    while (!at_end()) {
      const char c = s_[i_];
      if (c != ' ' && c != '\t' && c != '\n' && c != '\r') break;
      ++i_;
    }
  }

  void literal(const char* word, std::size_t n) {
    if (s_.substr(i_, n) != std::string_view(word, n)) fail("invalid literal");
    i_ += n;
  }

  Value value(int depth) {
    ws();
    if (at_end()) fail("unexpected end of input");
    Value v;
    switch (s_[i_]) {
      case '{':
        return object(depth + 1);
      case '[':
        return array(depth + 1);
      case '"':
        v.type_ = Value::Type::string;
        v.string_ = string();
        return v;
      case 't':
        literal("true", 4);
        v.type_ = Value::Type::boolean;
        v.bool_ = true;
        return v;
      case 'f':
        literal("false", 5);
        v.type_ = Value::Type::boolean;
        return v;
      case 'n':
        literal("null", 4);
        return v;
      default:
        return number();
    }
  }

  Value object(int depth) {
    if (depth > max_depth_) fail("nesting deeper than " + std::to_string(max_depth_) + " levels");
    ++i_;  // '{'
    Value v;
    v.type_ = Value::Type::object;
    std::unordered_set<std::string> keys;
    ws();
    if (!at_end() && s_[i_] == '}') {
      ++i_;
      return v;
    }
    for (;;) {
      ws();
      if (at_end() || s_[i_] != '"') fail("expected a string as object key");
      const std::size_t key_at = i_;
      std::string key = string();
      if (!keys.insert(key).second) throw ParseError("duplicate object key \"" + key.substr(0, 100) + "\"", key_at);
      ws();
      if (at_end() || s_[i_] != ':') fail("expected ':' after an object key");
      ++i_;
      Value member = value(depth);
      v.object_.emplace_back(std::move(key), std::move(member));
      ws();
      if (at_end()) fail("unterminated object");
      if (s_[i_] == ',') {
        ++i_;
        continue;
      }
      if (s_[i_] == '}') {
        ++i_;
        return v;
      }
      fail("expected ',' or '}' in an object");
    }
  }

  Value array(int depth) {
    if (depth > max_depth_) fail("nesting deeper than " + std::to_string(max_depth_) + " levels");
    ++i_;  // '['
    Value v;
    v.type_ = Value::Type::array;
    ws();
    if (!at_end() && s_[i_] == ']') {
      ++i_;
      return v;
    }
    for (;;) {
      v.array_.push_back(value(depth));
      ws();
      if (at_end()) fail("unterminated array");
      if (s_[i_] == ',') {
        ++i_;
        continue;
      }
      if (s_[i_] == ']') {
        ++i_;
        return v;
      }
      fail("expected ',' or ']' in an array");
    }
  }

  static bool digit(char c) { return c >= '0' && c <= '9'; }

  Value number() {
    const std::size_t b = i_;
    bool integer = true;
    if (!at_end() && s_[i_] == '-') ++i_;
    if (at_end()) fail("invalid number");
    if (s_[i_] == '0') {
      ++i_;
      if (!at_end() && digit(s_[i_])) fail("leading zeros are not allowed in numbers");
    } else if (digit(s_[i_])) {
      while (!at_end() && digit(s_[i_])) ++i_;
    } else {
      fail("invalid value");
    }
    if (!at_end() && s_[i_] == '.') {
      integer = false;
      ++i_;
      if (at_end() || !digit(s_[i_])) fail("expected digits after the decimal point");
      while (!at_end() && digit(s_[i_])) ++i_;
    }
    if (!at_end() && (s_[i_] == 'e' || s_[i_] == 'E')) {
      integer = false;
      ++i_;
      if (!at_end() && (s_[i_] == '+' || s_[i_] == '-')) ++i_;
      if (at_end() || !digit(s_[i_])) fail("expected digits in the exponent");
      while (!at_end() && digit(s_[i_])) ++i_;
    }
    const char* first = s_.data() + b;
    const char* last = s_.data() + i_;
    Value v;
    v.type_ = Value::Type::number;
    const auto r = std::from_chars(first, last, v.number_);
    if (r.ec == std::errc::result_out_of_range) throw ParseError("number out of the range of a double", b);
    if (r.ec != std::errc() || r.ptr != last || !std::isfinite(v.number_)) throw ParseError("invalid number", b);
    if (integer) {
      const auto ri = std::from_chars(first, last, v.int_);
      v.integer_ = ri.ec == std::errc() && ri.ptr == last;
    }
    return v;
  }

  unsigned hex4() {
    if (s_.size() - i_ < 4) fail("truncated \\u escape");
    unsigned v = 0;
    for (int k = 0; k < 4; ++k) {
      const char h = s_[i_++];
      v <<= 4;
      if (h >= '0' && h <= '9')
        v |= static_cast<unsigned>(h - '0');
      else if (h >= 'a' && h <= 'f')
        v |= static_cast<unsigned>(h - 'a' + 10);
      else if (h >= 'A' && h <= 'F')
        v |= static_cast<unsigned>(h - 'A' + 10);
      else
        fail("invalid hex digit in a \\u escape");
    }
    return v;
  }

  static void put_utf8(std::string& o, unsigned cp) {
    if (cp < 0x80) {
      o += static_cast<char>(cp);
    } else if (cp < 0x800) {
      o += static_cast<char>(0xC0 | (cp >> 6));
      o += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
      o += static_cast<char>(0xE0 | (cp >> 12));
      o += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      o += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
      o += static_cast<char>(0xF0 | (cp >> 18));
      o += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
      o += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      o += static_cast<char>(0x80 | (cp & 0x3F));
    }
  }

  // One UTF-8 encoded character starting at i_ (validated), appended to o.
  void utf8_char(std::string& o) {
    const unsigned char c = peek();
    int len;
    unsigned lo = 0x80, hi = 0xBF;  // allowed range of the second byte
    if (c < 0x80) {
      len = 1;
    } else if (c >= 0xC2 && c <= 0xDF) {
      len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      if (c == 0xE0) lo = 0xA0;       // no overlong forms
      if (c == 0xED) hi = 0x9F;       // no encoded surrogates
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      if (c == 0xF0) lo = 0x90;       // no overlong forms
      if (c == 0xF4) hi = 0x8F;       // nothing above U+10FFFF
    } else {
      fail("invalid UTF-8 in a string");
    }
    if (s_.size() - i_ < static_cast<std::size_t>(len)) fail("truncated UTF-8 sequence in a string");
    for (int k = 1; k < len; ++k) {
      const unsigned char d = static_cast<unsigned char>(s_[i_ + k]);
      if (k == 1 ? (d < lo || d > hi) : (d < 0x80 || d > 0xBF)) fail("invalid UTF-8 in a string");
    }
    o.append(s_.data() + i_, static_cast<std::size_t>(len));
    i_ += static_cast<std::size_t>(len);
  }

  std::string string() {
    ++i_;  // '"'
    std::string o;
    for (;;) {
      if (at_end()) fail("unterminated string");
      const unsigned char c = peek();
      if (c == '"') {
        ++i_;
        return o;
      }
      if (c < 0x20) fail("control character in a string (must be escaped)");
      if (c != '\\') {
        utf8_char(o);
        continue;
      }
      ++i_;
      if (at_end()) fail("unterminated escape in a string");
      const char e = s_[i_++];
      switch (e) {
        case '"':
          o += '"';
          break;
        case '\\':
          o += '\\';
          break;
        case '/':
          o += '/';
          break;
        case 'b':
          o += '\b';
          break;
        case 'f':
          o += '\f';
          break;
        case 'n':
          o += '\n';
          break;
        case 'r':
          o += '\r';
          break;
        case 't':
          o += '\t';
          break;
        case 'u': {
          unsigned cp = hex4();
          if (cp >= 0xDC00 && cp <= 0xDFFF) fail("lone low surrogate in a \\u escape");
          if (cp >= 0xD800 && cp <= 0xDBFF) {
            if (s_.size() - i_ < 2 || s_[i_] != '\\' || s_[i_ + 1] != 'u') fail("lone high surrogate in a \\u escape");
            i_ += 2;
            const unsigned low = hex4();
            if (low < 0xDC00 || low > 0xDFFF) fail("invalid surrogate pair in a \\u escape");
            cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
          }
          put_utf8(o, cp);
          break;
        }
        default:
          fail("invalid escape in a string");
      }
    }
  }
};

Value parse(std::string_view text, int max_depth) { return Parser(text, max_depth).document(); }

}  // namespace nfhep::detail::json
