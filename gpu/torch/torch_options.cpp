#include "gpu/torch/torch_options.hpp"

#include <algorithm>

#include "gpu/model/manifest_reader.hpp"

namespace shoal {

namespace {

caf::error read_weights(const manifest_reader& rd, const model_spec& spec,
                        torch_options& opts) {
  auto tbl = rd.table("weights");
  if (!tbl) {
    return tbl.error();
  }
  if (*tbl != nullptr) {
    caf::error err;
    (err = rd.only(**tbl, "weights.", {"file"})) ||
        (err = rd.get(**tbl, "weights.", "file", opts.weights_file));
    if (err) {
      return err;
    }
  }
  auto& f = opts.weights_file;
  if (f.empty() || f.front() == '/' || f.find("..") != std::string::npos) {
    return rd.fail("weights.file", "expected a file name inside the version "
                                   "directory, got '" +
                                       f + "'");
  }
  auto listed = std::any_of(spec.files.begin(), spec.files.end(),
                            [&](auto& kv) { return kv.first == f; });
  if (!listed) {
    return rd.fail("weights.file", "'" + f +
                                       "' is not listed in [files] (its "
                                       "sha256 is required)");
  }
  return {};
}

caf::error read_torch_table(const manifest_reader& rd, const model_spec& spec,
                            torch_options& opts) {
  auto tbl = rd.table("torch");
  if (!tbl) {
    return tbl.error();
  }
  if (*tbl == nullptr) {
    return {};
  }
  std::string precision = "f32";
  uint64_t threads = 0;
  caf::error err;
  (err = rd.only(**tbl, "torch.", {"threads", "precision", "warmup"})) ||
      (err = rd.get(**tbl, "torch.", "threads", threads)) ||
      (err = rd.get(**tbl, "torch.", "precision", precision)) ||
      (err = rd.get(**tbl, "torch.", "warmup", opts.warmup));
  if (err) {
    return err;
  }
  if (threads > 4096) {
    return rd.fail("torch.threads", "at most 4096");
  }
  opts.threads = static_cast<uint32_t>(threads);
  auto p = parse_dtype(precision);
  if (!p || (*p != dtype::f32 && *p != dtype::f16 && *p != dtype::bf16)) {
    return rd.fail("torch.precision",
                   "expected \"f32\", \"f16\" or \"bf16\", got '" + precision +
                       "'");
  }
  if (*p != dtype::f32 && spec.device == "cpu") {
    return rd.fail("torch.precision", "f16 and bf16 run on a GPU only "
                                      "(resources.device = \"gpu\" or "
                                      "\"any\")");
  }
  opts.precision = *p;
  return {};
}

} // namespace

std::vector<std::string> torch_sections() {
  return {"weights", "torch"};
}

caf::expected<backend_options_ptr>
parse_torch_options(const manifest_reader& rd, const model_spec& spec) {
  auto opts = std::make_shared<torch_options>();
  if (auto err = read_weights(rd, spec, *opts)) {
    return err;
  }
  if (auto err = read_torch_table(rd, spec, *opts)) {
    return err;
  }
  if (spec.inputs.empty() || spec.outputs.empty()) {
    return rd.fail(spec.inputs.empty() ? "inputs" : "outputs",
                   "a torch model declares at least one");
  }
  return backend_options_ptr{std::move(opts)};
}

} // namespace shoal
