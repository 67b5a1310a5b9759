// nfhep/detail/json.hpp: a strict RFC 8259 JSON reader for the model-file header (internal to the core).
//
// Strict: no comments, no trailing commas, no NaN/Infinity, no leading zeros, no control characters in
// strings, full UTF-8 validation (no overlong forms, no encoded surrogates, nothing above U+10FFFF),
// \uXXXX escapes with surrogate pairs (lone surrogates refused), duplicate object keys refused, nesting
// limited to max_depth, only whitespace after the value. Numbers are parsed exactly and independently of
// the locale (std::from_chars); a number that does not fit a double is an error; an integer literal that
// fits int64 is also available as one. Linear time; never crashes on any input (fuzzed under ASan/UBSan).
#pragma once
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "nfhep/config.hpp"

namespace nfhep::detail::json {

/// A syntax error, with the byte offset where it was found.
class NFHEP_API ParseError : public std::runtime_error {
 public:
  ParseError(const std::string& what, std::size_t offset);
  std::size_t offset() const { return offset_; }

 private:
  std::size_t offset_;
};

/// A JSON value. Accessors of the wrong type throw std::logic_error (callers check the type first).
class NFHEP_API Value {
 public:
  enum class Type { null, boolean, number, string, array, object };
  Type type() const { return type_; }
  bool is_null() const { return type_ == Type::null; }
  bool is_bool() const { return type_ == Type::boolean; }
  bool is_number() const { return type_ == Type::number; }
  bool is_string() const { return type_ == Type::string; }
  bool is_array() const { return type_ == Type::array; }
  bool is_object() const { return type_ == Type::object; }
  bool as_bool() const;
  double as_double() const;
  /// A number written without fraction or exponent that fits in int64.
  bool is_integer() const { return type_ == Type::number && integer_; }
  std::int64_t as_int64() const;
  const std::string& as_string() const;
  const std::vector<Value>& as_array() const;
  /// Members in document order.
  const std::vector<std::pair<std::string, Value>>& as_object() const;
  /// The member `key` of an object, or nullptr (also when this is not an object).
  const Value* find(std::string_view key) const;
  static const char* type_name(Type t);

 private:
  friend class Parser;
  Type type_ = Type::null;
  bool bool_ = false;
  bool integer_ = false;
  double number_ = 0;
  std::int64_t int_ = 0;
  std::string string_;
  std::vector<Value> array_;
  std::vector<std::pair<std::string, Value>> object_;
};

/// Parse a whole document (throws ParseError).
NFHEP_API Value parse(std::string_view text, int max_depth = 64);

}  // namespace nfhep::detail::json
