// `shoalctl infer --input NAME:DTYPE:SHAPE:VALUES`: a tensor written on the
// command line.
#pragma once

#include <string>
#include <string_view>

#include "net/wire/codec.hpp"
#include "net/wire/message.hpp"

namespace shoal::ctl {

// NAME:DTYPE:SHAPE:VALUES, e.g. x:f32:1,4:0.5,1,2,3 (a single value fills
// the tensor; an empty SHAPE is a scalar). Splits from the right so the name
// may itself contain ':'. False, with the reason in `err`, when the text is
// malformed, a value does not fit the dtype, or the tensor would break the
// codec's limits.
bool parse_input(std::string_view spec, const codec_limits& limits, tensor& out,
                 std::string& err);

} // namespace shoal::ctl
