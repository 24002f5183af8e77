#include "gpu/plugin/plugin_file.hpp"

#include <unistd.h>

#include <algorithm>
#include <climits>
#include <filesystem>

#include "net/wire/error.hpp"

namespace shoal {

namespace fs = std::filesystem;

std::vector<std::string> plugin_candidates(const plugin_location& where) {
  std::vector<std::string> out;
  char buf[PATH_MAX];
  auto n = ::readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  if (n > 0) {
    auto dir = fs::path{std::string{buf, static_cast<size_t>(n)}}.parent_path();
    out.push_back((dir / where.build_dir / where.file).string());
    out.push_back((dir / ".." / where.build_dir / where.file).string());
    out.push_back((dir / "../lib/shoal" / where.file).string());
  }
  if (!where.built_path.empty()) {
    out.push_back(where.built_path);
  }
  return out;
}

caf::expected<shared_library> open_plugin(const plugin_location& where,
                                          const plugin_check& check) {
  std::string errors;
  std::vector<fs::path> tried;
  for (auto& candidate : plugin_candidates(where)) {
    std::error_code ec;
    auto path = fs::canonical(candidate, ec);
    if (ec || std::find(tried.begin(), tried.end(), path) != tried.end()) {
      continue;
    }
    tried.push_back(path);
    auto lib = shared_library::open(path.string());
    caf::error err = lib ? check(*lib, path.string()) : lib.error();
    if (!err) {
      return std::move(*lib);
    }
    errors += (errors.empty() ? "" : "; ") + reason_of(err);
  }
  return make_error(errc::unavailable,
                    errors.empty() ? where.file + " not found" : errors);
}

} // namespace shoal
