// Small pieces every MessagePack codec of ours needs: packing into a
// std::string and naming an object's type in error messages.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include <msgpack.hpp>

namespace shoal {

// A msgpack::packer stream that appends to a string.
struct string_writer {
  std::string& buf;
  void write(const char* p, size_t n) { buf.append(p, n); }
};

// The type of `o` as error messages name it ("uint", "str", "map", ...).
inline std::string_view msgpack_kind_name(const msgpack::object& o) {
  namespace mt = msgpack::type;
  switch (o.type) {
  case mt::NIL:
    return "nil";
  case mt::BOOLEAN:
    return "bool";
  case mt::POSITIVE_INTEGER:
    return "uint";
  case mt::NEGATIVE_INTEGER:
    return "negative int";
  case mt::FLOAT32:
  case mt::FLOAT64:
    return "float";
  case mt::STR:
    return "str";
  case mt::BIN:
    return "bin";
  case mt::ARRAY:
    return "array";
  case mt::MAP:
    return "map";
  case mt::EXT:
    return "ext";
  }
  return "unknown";
}

} // namespace shoal
