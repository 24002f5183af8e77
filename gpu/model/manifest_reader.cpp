#include "gpu/model/manifest_reader.hpp"

#include <algorithm>
#include <set>

#include "net/wire/error.hpp"

namespace shoal {

namespace {

caf::error io_shape(const manifest_reader& rd, const toml::table& tbl,
                    const std::string& prefix, io_spec& out) {
  auto* shape = tbl.get_as<toml::array>("shape");
  if (shape == nullptr) {
    return rd.fail(prefix + "shape", "required: an array of integers");
  }
  for (size_t d = 0; d < shape->size(); ++d) {
    auto v = shape->get(d)->value_exact<int64_t>();
    if (!v || *v < -1 || *v == 0) {
      return rd.fail(prefix + "shape", "dimensions are positive integers, or "
                                       "-1 for the batch axis");
    }
    if (*v == -1 && d != 0) {
      return rd.fail(prefix + "shape", "only the first axis may be -1");
    }
    out.shape.push_back(*v);
  }
  if (out.shape.size() > 8) {
    return rd.fail(prefix + "shape", "rank above 8");
  }
  return {};
}

// One [[inputs]] or [[outputs]] entry.
caf::error io_entry(const manifest_reader& rd, const toml::table& tbl,
                    const std::string& prefix, io_spec& out) {
  if (auto err = rd.only(tbl, prefix, {"name", "dtype", "shape"})) {
    return err;
  }
  if (auto err = rd.get(tbl, prefix, "name", out.name)) {
    return err;
  }
  if (out.name.empty()) {
    return rd.fail(prefix + "name", "required");
  }
  std::string dt;
  if (auto err = rd.get(tbl, prefix, "dtype", dt)) {
    return err;
  }
  auto parsed = parse_dtype(dt);
  if (!parsed) {
    return rd.fail(prefix + "dtype", "unknown dtype '" + dt + "'");
  }
  out.type = *parsed;
  return io_shape(rd, tbl, prefix, out);
}

} // namespace

manifest_reader::manifest_reader(std::string path, const toml::table& root)
    : path_(std::move(path)), root_(root) {
  // nop
}

caf::error manifest_reader::fail(const std::string& key,
                                 const std::string& what) const {
  return make_error(errc::config_invalid, path_ + ": " + key + ": " + what);
}

caf::error
manifest_reader::only(const toml::table& tbl, const std::string& prefix,
                      const std::vector<std::string_view>& allowed) const {
  for (auto& [k, v] : tbl) {
    if (std::find(allowed.begin(), allowed.end(), k.str()) == allowed.end()) {
      return fail(prefix + std::string{k.str()}, "unknown key");
    }
  }
  return {};
}

caf::expected<const toml::table*>
manifest_reader::table(std::string_view key) const {
  auto* n = root_.get(key);
  if (n == nullptr) {
    return static_cast<const toml::table*>(nullptr);
  }
  if (auto* t = n->as_table()) {
    return t;
  }
  return fail(std::string{key}, "expected a table");
}

caf::expected<const toml::array*>
manifest_reader::tables(std::string_view key) const {
  auto* n = root_.get(key);
  if (n == nullptr) {
    return static_cast<const toml::array*>(nullptr);
  }
  if (auto* a = n->as_array()) {
    return a;
  }
  return fail(std::string{key},
              "expected an array of tables [[" + std::string{key} + "]]");
}

caf::error manifest_reader::io_list(std::string_view key,
                                    std::vector<io_spec>& out) const {
  auto arr = tables(key);
  if (!arr) {
    return arr.error();
  }
  if (*arr == nullptr) {
    return {};
  }
  std::set<std::string> names;
  for (size_t i = 0; i < (*arr)->size(); ++i) {
    auto prefix = std::string{key} + "[" + std::to_string(i) + "].";
    auto* t = (*arr)->get(i)->as_table();
    if (t == nullptr) {
      return fail(prefix, "expected a table");
    }
    io_spec s;
    if (auto err = io_entry(*this, *t, prefix, s)) {
      return err;
    }
    if (!names.insert(s.name).second) {
      return fail(prefix + "name", "duplicate name '" + s.name + "'");
    }
    out.push_back(std::move(s));
  }
  return {};
}

} // namespace shoal
