#include "runtime/node/log.hpp"

#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include "net/wire/error.hpp"

namespace shoal {

caf::error init_logging(const std::string& level,
                        const std::string& node_name) {
  auto lvl = spdlog::level::from_str(level);
  if (lvl == spdlog::level::off && level != "off") {
    return make_error(errc::config_invalid,
                      "log.level: unknown level '" + level + "'");
  }
  auto logger = spdlog::stderr_logger_mt("shoal:" + node_name);
  spdlog::set_default_logger(logger);
  spdlog::set_level(lvl);
  spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ [" + node_name + "] %v");
  spdlog::flush_on(spdlog::level::warn);
  return {};
}

} // namespace shoal
