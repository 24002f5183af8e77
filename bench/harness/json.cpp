#include "bench/harness/json.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>

#include "bench/harness/run.hpp"

namespace shoal::bench {

std::string json_num(double v) {
  if (std::isnan(v) || std::isinf(v)) {
    return "null";
  }
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.6g", v);
  return buf;
}

std::string json_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '"' || c == '\\') {
      out.push_back('\\');
      out.push_back(c);
    } else if (static_cast<unsigned char>(c) < 0x20) {
      out += ' ';
    } else {
      out.push_back(c);
    }
  }
  return out;
}

json::json(bool b) : kind_(kind::boolean), text_(b ? "true" : "false") {}

json::json(double v) : kind_(kind::number), text_(json_num(v)) {}

json::json(const std::optional<double>& v) {
  if (v) {
    *this = json{*v};
  }
}

json::json(std::string s) : kind_(kind::string), text_(std::move(s)) {}

json::json(const char* s) : json(std::string{s}) {}

json json::array() {
  json j;
  j.kind_ = kind::array;
  return j;
}

json json::object() {
  json j;
  j.kind_ = kind::object;
  return j;
}

json& json::set(const std::string& key, json v) {
  operator[](key) = std::move(v);
  return *this;
}

json& json::operator[](const std::string& key) {
  kind_ = kind::object;
  auto it = std::find(keys_.begin(), keys_.end(), key);
  if (it != keys_.end()) {
    return items_[static_cast<size_t>(it - keys_.begin())];
  }
  keys_.push_back(key);
  items_.push_back(object());
  return items_.back();
}

json& json::merge(const json& other) {
  for (size_t i = 0; i < other.keys_.size(); ++i) {
    set(other.keys_[i], other.items_[i]);
  }
  return *this;
}

json& json::push(json v) {
  kind_ = kind::array;
  items_.push_back(std::move(v));
  return *this;
}

namespace {

// Appended piecewise: GCC 12 warns (-Wrestrict, a false positive) about
// `"\"" + std::string&&`.
std::string quoted(const std::string& text) {
  std::string s = "\"";
  s += json_escape(text);
  s += '"';
  return s;
}

} // namespace

std::string json::dump(int indent) const {
  switch (kind_) {
  case kind::null:
    return "null";
  case kind::string:
    return quoted(text_);
  case kind::boolean:
  case kind::number:
    return text_;
  default:
    break;
  }
  bool flat = std::none_of(items_.begin(), items_.end(),
                           [](const json& j) { return j.is_container(); });
  const char* brackets = kind_ == kind::array ? "[]" : "{}";
  if (items_.empty() || (flat && kind_ == kind::array)) {
    std::string s(1, brackets[0]);
    for (size_t i = 0; i < items_.size(); ++i) {
      s += (i ? ", " : "") + items_[i].dump(indent);
    }
    return s + brackets[1];
  }
  std::string pad(static_cast<size_t>(indent + 2), ' ');
  std::string s(1, brackets[0]);
  for (size_t i = 0; i < items_.size(); ++i) {
    s += (i ? ",\n" : "\n") + pad;
    if (kind_ == kind::object) {
      s += quoted(keys_[i]);
      s += ": ";
    }
    s += items_[i].dump(indent + 2);
  }
  return s + "\n" + std::string(static_cast<size_t>(indent), ' ') + brackets[1];
}

void write_json_file(const std::string& path, const json& doc) {
  std::ofstream out{path};
  out << doc.dump() << "\n";
  out.close();
  if (!out) {
    throw bench_error{"cannot write " + path};
  }
}

} // namespace shoal::bench
