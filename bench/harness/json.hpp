// The JSON every benchmark writes with --json FILE: a value built in code
// and written once.
#pragma once

#include <optional>
#include <string>
#include <type_traits>
#include <vector>

namespace shoal::bench {

// A number, or null for NaN and infinities (JSON has neither).
std::string json_num(double v);

// The inside of a JSON string: quotes and backslashes escaped, control
// characters (never in our labels) replaced by spaces.
std::string json_escape(const std::string& s);

// null, a boolean, a number, a string, an array, or an object whose members
// keep the order they were set in (the order a reader expects them).
class json {
public:
  json() = default;
  json(std::nullptr_t) {}
  json(bool b);
  json(double v);
  json(const std::optional<double>& v);
  json(std::string s);
  json(const char* s);
  template <class T>
    requires(std::is_integral_v<T> && !std::is_same_v<T, bool>)
  json(T v) : kind_(kind::number), text_(std::to_string(v)) {
    // Integers as they are: a count of bytes is exact beyond 2^53.
  }

  static json array();
  static json object();
  template <class T>
  static json array_of(const std::vector<T>& xs) {
    auto a = array();
    for (const auto& x : xs) {
      a.push(json{x});
    }
    return a;
  }

  // Objects: sets the member `key` (added at the end when new).
  json& set(const std::string& key, json v);
  // Objects: the member `key`, added as an object when missing.
  json& operator[](const std::string& key);
  // Objects: sets every member of the object `other`, in its order.
  json& merge(const json& other);
  // Arrays: appends `v`.
  json& push(json v);

  // Objects and arrays over several lines, indented; arrays of plain values
  // on one.
  std::string dump(int indent = 0) const;

private:
  enum class kind { null, boolean, number, string, array, object };
  bool is_container() const {
    return kind_ == kind::array || kind_ == kind::object;
  }

  kind kind_ = kind::null;
  std::string text_;              // a boolean, number or string
  std::vector<std::string> keys_; // object members' names
  std::vector<json> items_;       // array items or object members' values
};

// Writes `doc` to `path`; throws bench_error when it cannot.
void write_json_file(const std::string& path, const json& doc);

} // namespace shoal::bench
