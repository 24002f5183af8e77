// Scalar conversions of the 16-bit float dtypes (f16, bf16) to f32, shared
// by the weight loaders and the kernels. Exact for every input: subnormals,
// infinities and NaN payloads included.
#pragma once

#include <bit>
#include <cstdint>

namespace shoal {

inline float f16_to_f32(uint16_t h) noexcept {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  const uint32_t mant = h & 0x3ffu;
  if (exp == 0) {
    // Zero or subnormal: mant * 2^-24, exact in f32.
    const float mag = static_cast<float>(mant) * 0x1p-24f;
    return sign ? -mag : mag;
  }
  if (exp == 0x1f) // inf or NaN, payload kept
    return std::bit_cast<float>(sign | 0x7f800000u | (mant << 13));
  return std::bit_cast<float>(sign | ((exp + (127 - 15)) << 23) | (mant << 13));
}

// bf16 is the upper half of an f32.
inline float bf16_to_f32(uint16_t h) noexcept {
  return std::bit_cast<float>(static_cast<uint32_t>(h) << 16);
}

} // namespace shoal
