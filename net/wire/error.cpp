#include "net/wire/error.hpp"

#include <caf/message.hpp>

namespace shoal {

caf::error make_error(errc code, std::string reason) {
  return caf::error{static_cast<uint8_t>(code), caf::atom("shoal"),
                    caf::make_message(std::move(reason))};
}

std::string reason_of(const caf::error& err) {
  if (!err) {
    return {};
  }
  const auto& ctx = err.context();
  if (err.category() == caf::atom("shoal") && ctx.size() == 1 &&
      ctx.match_element<std::string>(0)) {
    return ctx.get_as<std::string>(0);
  }
  std::string out = caf::to_string(err.category());
  out += " error ";
  out += std::to_string(err.code());
  if (!ctx.empty()) {
    out += ": ";
    out += caf::to_string(ctx);
  }
  return out;
}

status to_status(const caf::error& err) noexcept {
  if (!err) {
    return status::ok;
  }
  if (err.category() != caf::atom("shoal")) {
    return status::internal;
  }
  switch (static_cast<errc>(err.code())) {
  case errc::none:
    return status::ok;
  case errc::invalid_argument:
  case errc::config_invalid:
    return status::invalid_argument;
  case errc::not_found:
    return status::not_found;
  case errc::resource_exhausted:
    return status::resource_exhausted;
  case errc::deadline_exceeded:
    return status::deadline_exceeded;
  case errc::unavailable:
  case errc::io_error:
    return status::unavailable;
  case errc::cancelled:
    return status::cancelled;
  case errc::internal:
    break;
  }
  return status::internal;
}

std::string_view to_string(errc e) noexcept {
  switch (e) {
  case errc::none:
    return "none";
  case errc::invalid_argument:
    return "invalid_argument";
  case errc::not_found:
    return "not_found";
  case errc::resource_exhausted:
    return "resource_exhausted";
  case errc::deadline_exceeded:
    return "deadline_exceeded";
  case errc::unavailable:
    return "unavailable";
  case errc::internal:
    return "internal";
  case errc::cancelled:
    return "cancelled";
  case errc::config_invalid:
    return "config_invalid";
  case errc::io_error:
    return "io_error";
  }
  return "unknown";
}

} // namespace shoal
