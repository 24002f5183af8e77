// Logging set-up: spdlog to stderr, one line per event, with the node name.
#pragma once

#include <string>

#include <caf/error.hpp>

namespace shoal {

// Sets the level ("trace" .. "off") and the line format.
caf::error init_logging(const std::string& level, const std::string& node_name);

} // namespace shoal
