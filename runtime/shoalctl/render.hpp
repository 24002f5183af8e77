// How shoalctl shows replies: one JSON object per reply (--json), or tables
// and lines for people.
#pragma once

#include <chrono>
#include <string>

#include "net/wire/message.hpp"

namespace shoal::ctl {

// The reply as one line of JSON, every key it carries.
std::string reply_json(const reply& rep);

// The `models` reply as a table.
void print_models(const reply& rep);

// The `status` reply as a table, each node's GPUs on lines under it.
void print_nodes(const reply& rep);

// A `reload` reply: one line per model version added, removed or refused
// (with why), or that nothing changed.
void print_changes(const reply& rep);

// An `infer` reply: status, source, model, node, timings, the outputs'
// first values.
void print_infer(const reply& rep, std::chrono::microseconds round_trip);

} // namespace shoal::ctl
