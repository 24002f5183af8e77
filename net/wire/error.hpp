// The project's error enum, used with caf::error / caf::expected at every
// boundary (codec, config, model repository, backends).
#pragma once

#include <string>

#include <caf/error.hpp>
#include <caf/expected.hpp>
#include <caf/make_message.hpp>
#include <caf/message.hpp>

#include "net/wire/message.hpp"

namespace shoal {

enum class errc : uint8_t {
  none = 0,
  invalid_argument,   // malformed or semantically wrong input
  not_found,          // unknown model, version, file or key
  resource_exhausted, // a queue or budget is full
  deadline_exceeded,
  unavailable, // a model could not be loaded or no replica can serve
  internal,
  cancelled,
  config_invalid, // a config or manifest file names a bad key or value
  io_error,       // libc, ZeroMQ or HTTP failure, wrapped at the edge
};

} // namespace shoal

CAF_ERROR_CODE_ENUM(shoal::errc, "shoal")

namespace shoal {

// A caf::error of our category carrying a human-readable reason.
caf::error make_error(errc code, std::string reason);

// The reason string of an error made by make_error (or CAF's rendering of a
// foreign error).
std::string reason_of(const caf::error& err);

// The wire status a client sees for an error.
status to_status(const caf::error& err) noexcept;

std::string_view to_string(errc e) noexcept;

} // namespace shoal
