// Finding and opening a backend plugin (libshoal_<name>.so) that the node
// loads with dlopen only when a model first needs it (the cuda and torch
// backends): where it may be, in the build tree or installed, and the
// first candidate that is a plugin of this version.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include <caf/error.hpp>
#include <caf/expected.hpp>

#include "gpu/plugin/shared_library.hpp"

namespace shoal {

struct plugin_location {
  std::string file;       // "libshoal_torch.so"
  std::string build_dir;  // its folder in the build tree: "gpu/torch"
  std::string built_path; // the absolute path the build wrote it to
};

// Where the plugin may be: beside the executable as built (build/shoald,
// build/tests/x, build/bench/x) or installed (bin/ and lib/shoal/), then
// the build tree's absolute path.
std::vector<std::string> plugin_candidates(const plugin_location& where);

// Says whether an opened library is the plugin wanted (its entry point and
// ABI version); an error names what is wrong with it.
using plugin_check =
    std::function<caf::error(const shared_library& lib, const std::string&)>;

// The first candidate that opens and passes `check`; errc::unavailable
// listing why each one failed (dlerror's text names a missing dependency).
caf::expected<shared_library> open_plugin(const plugin_location& where,
                                          const plugin_check& check);

} // namespace shoal
