// Reading one model.toml, for the manifest parser (gpu/model/manifest.hpp)
// and the backends' section parsers (gpu/registry.hpp): typed values whose
// errors name the file and the key, and the check that refuses unknown keys,
// so that a typo in a manifest is never silently ignored.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include <caf/error.hpp>
#include <caf/expected.hpp>
#include <toml++/toml.h>

#include "config/toml_value.hpp"
#include "net/wire/message.hpp"

namespace shoal {

class manifest_reader {
public:
  // `root` must outlive the reader.
  manifest_reader(std::string path, const toml::table& root);

  const std::string& path() const noexcept { return path_; }
  const toml::table& root() const noexcept { return root_; }

  // errc::config_invalid: "<path>: <key>: <what>".
  caf::error fail(const std::string& key, const std::string& what) const;

  // Refuses the first key of `tbl` that is not in `allowed`; `prefix`
  // ("resources.") names the table in the error.
  caf::error only(const toml::table& tbl, const std::string& prefix,
                  const std::vector<std::string_view>& allowed) const;

  // Reads tbl[key] into `out` when it is there (absent leaves `out` as it
  // is); a value of the wrong type is an error naming prefix + key.
  template <class T>
  caf::error get(const toml::table& tbl, const std::string& prefix,
                 std::string_view key, T& out) const {
    auto* n = tbl.get(key);
    if (n == nullptr) {
      return {};
    }
    if (auto what = read_toml_value(*n, out)) {
      return fail(prefix + std::string{key}, what);
    }
    return {};
  }

  // The root table `[key]`: nullptr when absent, an error when `key` holds
  // something else.
  caf::expected<const toml::table*> table(std::string_view key) const;

  // The root array of tables `[[key]]`: nullptr when absent, an error when
  // `key` holds something else. Its elements are checked by the caller.
  caf::expected<const toml::array*> tables(std::string_view key) const;

  // `[[inputs]]` or `[[outputs]]`: names unique, dtypes known, shapes of
  // positive dimensions with -1 (the batch axis) first only.
  caf::error io_list(std::string_view key, std::vector<io_spec>& out) const;

private:
  std::string path_;
  const toml::table& root_;
};

} // namespace shoal
