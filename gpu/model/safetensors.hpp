// Reader and writer for .safetensors weight files (the format Hugging Face and
// ComfyUI ship). The reader treats the file as untrusted: the JSON header is
// parsed with hard limits and every dtype, shape and offset is checked against
// the file size before anything points into it. Weights are not copied: the
// file is mapped read-only and tensor views point into the mapping, so a
// loaded model costs its weights' size once, in the page cache.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <caf/error.hpp>
#include <caf/expected.hpp>

#include "net/wire/message.hpp"

namespace shoal {

struct safetensors_limits {
  // Hugging Face refuses headers over 100 MB; so do we by default.
  uint64_t max_header_bytes = uint64_t{100} << 20;
  uint64_t max_tensors = 65536;
  size_t max_rank = 8;
};

// One tensor of a mapped file. `data` points into the mapping and stays valid
// as long as the safetensors_file that produced it (moves included). It has no
// alignment guarantee beyond what the writer chose; read it with memcpy.
struct tensor_view {
  std::string name;
  dtype type = dtype::f32;
  std::vector<uint64_t> shape;
  const uint8_t* data = nullptr;
  uint64_t bytes = 0;
};

// A validated, memory-mapped .safetensors file. Move-only: it owns the mapping.
class safetensors_file {
public:
  // Maps `path` and validates its header. Errors: not_found when the file
  // does not exist, io_error for other libc failures, invalid_argument for a
  // malformed file, with a reason naming the file and the offending field.
  static caf::expected<safetensors_file>
  open(const std::string& path, const safetensors_limits& limits = {});

  safetensors_file() = default;
  safetensors_file(safetensors_file&& other) noexcept;
  safetensors_file& operator=(safetensors_file&& other) noexcept;
  safetensors_file(const safetensors_file&) = delete;
  safetensors_file& operator=(const safetensors_file&) = delete;
  ~safetensors_file();

  // In file order (ascending data offset).
  const std::vector<tensor_view>& tensors() const noexcept { return tensors_; }

  // nullptr when there is no tensor of that name.
  const tensor_view* find(std::string_view name) const noexcept;

  // The optional "__metadata__" object.
  const std::map<std::string, std::string>& metadata() const noexcept {
    return metadata_;
  }

  uint64_t file_bytes() const noexcept { return size_; }

  const std::string& path() const noexcept { return path_; }

  // Start of the mapping (file byte 0); every tensor's data lies in
  // [mapping(), mapping() + file_bytes()].
  const uint8_t* mapping() const noexcept { return base_; }

private:
  void release() noexcept;

  std::string path_;
  const uint8_t* base_ = nullptr;
  uint64_t size_ = 0;
  std::vector<tensor_view> tensors_;
  // Indices into tensors_, sorted by name, for find().
  std::vector<uint32_t> by_name_;
  std::map<std::string, std::string> metadata_;
};

// Converts a float tensor (F32, F16, BF16, F64) to f32 values, so that weights
// stored in half precision can be computed on in f32. Subnormals, infinities
// and NaNs convert exactly; F64 rounds to nearest. Non-float dtypes are an
// invalid_argument error.
caf::expected<std::vector<float>> to_f32(const tensor_view& t);

// Writes a .safetensors file (for tests and the model generator): tensors in
// name order, packed without gaps, the header padded with spaces to a
// multiple of 8 bytes as Hugging Face does, so that data starts aligned. The
// pair's first member names the tensor (tensor::name is ignored).
caf::error
write_safetensors(const std::string& path,
                  const std::vector<std::pair<std::string, tensor>>& tensors,
                  const std::map<std::string, std::string>& metadata = {});

// The safetensors spelling of a dtype ("F32", "BF16", "BOOL", ...).
std::string_view safetensors_dtype_name(dtype t) noexcept;

} // namespace shoal
