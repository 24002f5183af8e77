#include "runtime/node/service_discovery.hpp"

#include <cctype>

namespace shoal {

namespace {

std::string quote(const std::string& s) {
  std::string out = "\"";
  for (char ch : s) {
    if (ch == '"' || ch == '\\') {
      out += '\\';
    }
    // Control characters have no place in a label; dropped, not escaped.
    if (static_cast<unsigned char>(ch) >= 0x20) {
      out += ch;
    }
  }
  out += '"';
  return out;
}

std::string label_name(const std::string& key) {
  std::string out = "label_";
  for (char ch : key) {
    out += std::isalnum(static_cast<unsigned char>(ch)) ? ch : '_';
  }
  return out;
}

std::string group(const sd_target& t) {
  std::string out = "{\"targets\":[";
  out += quote(t.target);
  out += "],\"labels\":{\"node\":";
  out += quote(t.node);
  out += ",\"role\":";
  out += quote(t.role);
  if (!t.k8s_namespace.empty()) {
    out += ",\"namespace\":";
    out += quote(t.k8s_namespace);
  }
  // Appends rather than "literal" + temporary: GCC 12 warns falsely
  // (-Wrestrict) on the inlined operator+(const char*, string&&).
  for (auto& [k, v] : t.labels) {
    out += ',';
    out += quote(label_name(k));
    out += ':';
    out += quote(v);
  }
  out += "}}";
  return out;
}

} // namespace

std::string render_service_discovery(const std::vector<sd_target>& targets) {
  std::string out = "[";
  for (auto& t : targets) {
    if (out.size() > 1) {
      out += ",";
    }
    out += group(t);
  }
  out += "]\n";
  return out;
}

} // namespace shoal
