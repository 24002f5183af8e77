// The backends a node can load, by the name a manifest gives them in
// `backend = "..."`. A backend describes itself once, in a backend_info:
// the manifest sections it reads and the parser that turns them into its
// own options, the values of resources.device its models may ask for and
// the default, whether loading or running it may block a thread, and the
// factory that loads a model. The manifest parser (gpu/model/manifest.hpp),
// load_backend and backend_may_block (gpu/backend.hpp) ask the registry;
// no other code names a backend.
//
// How a backend registers:
// - Built into the node (a folder under gpu/): one line in the list in
//   builtin_backends() (gpu/registry.cpp) that calls the folder's
//   `<name>_backend_info()`. A list, not self-registering static objects,
//   because the backends live in static libraries: the linker leaves out
//   an object file that nothing references, and a registration with it,
//   without a word.
// - In a program's own sources (a test, or a node with a private backend
//   whose main calls shoald_main, runtime/node/shoald.hpp): one
//   SHOAL_REGISTER_BACKEND(info) at namespace scope in one of its .cpp
//   files, which the linker always keeps.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <caf/error.hpp>
#include <caf/expected.hpp>

#include "config/config.hpp"
#include "gpu/backend.hpp"
#include "gpu/model/model_spec.hpp"

namespace shoal {

class manifest_reader;

// A value of resources.device: run on the CPU, on a GPU (or not at all),
// or on a GPU with room, else on the CPU.
enum class device_kind : uint8_t { cpu, gpu, any };

// "cpu", "gpu", "any".
std::string_view to_string(device_kind kind) noexcept;

// The kind a manifest names; nullopt for anything else.
std::optional<device_kind> parse_device_kind(std::string_view text) noexcept;

// Where load_backend puts one replica: on the CPU, or on one GPU.
struct device_choice {
  bool on_gpu = false;
  int gpu = 0; // CUDA ordinal, when on_gpu

  static device_choice cpu() noexcept { return {}; }
  static device_choice gpu_ordinal(int ordinal) noexcept {
    return {true, ordinal};
  }
};

struct backend_info {
  // Reads the backend's sections (those in `sections`, and its keys in
  // [resources]) through `rd`, which names the file and key in errors.
  // `spec` holds everything common already parsed (inputs, outputs,
  // device, batching). Returns the options the backend's load reads back
  // with options_of<T>(spec).
  using parse_fn = std::function<caf::expected<backend_options_ptr>(
      const manifest_reader& rd, const model_spec& spec)>;
  // Loads one replica where load_backend placed it. Errors:
  // errc::unavailable naming the file or field, errc::resource_exhausted
  // when the device has no room (load_backend then tries elsewhere).
  using load_fn = std::function<caf::expected<backend_ptr>(
      const model_spec& spec, device_choice where, const load_options& opts)>;
  using may_block_fn = std::function<bool(const model_spec& spec)>;
  // Takes the node's settings that concern the backend, once at start.
  using configure_fn = std::function<void(const node_config& cfg)>;

  // What `backend =` says.
  std::string name;
  // The top-level manifest keys the backend owns: its tables ("synthetic")
  // and arrays of tables ("layers"). Any other backend's model that has
  // them is refused as having an unknown key.
  std::vector<std::string> sections;
  // Its keys inside the shared [resources] table ("allow_tf32").
  std::vector<std::string> resource_keys;
  // The resources.device values its models may ask for, and the one they
  // get when they ask for none (one of `devices`).
  std::vector<device_kind> devices{device_kind::cpu};
  device_kind default_device = device_kind::cpu;
  // Empty: the backend has no options (and no sections).
  parse_fn parse;
  load_fn load;
  // Whether loading or running a model may block its thread (sleeps,
  // long kernels, device syncs); empty means always.
  may_block_fn may_block;
  // Empty: the backend has no node-wide settings.
  configure_fn configure;

  bool accepts(device_kind kind) const noexcept;
};

// The backend named `name`; nullptr when none is.
const backend_info* find_backend(std::string_view name);

// Every backend's name, sorted.
std::vector<std::string> backend_names();

// Hands the node's settings to every backend that has a configure
// function; the node calls it once, before any model loads.
void configure_backends(const node_config& cfg);

// Adds a backend. Refuses (errc::config_invalid, naming it) an empty name
// or load function, a name taken, a default device it does not accept,
// and sections or resource keys that the common manifest uses or that it
// cannot parse.
caf::error register_backend(backend_info info);

// Loads `spec` with the factory of the backend named `name`, for a backend
// that hands a placement to another: the graph of backend = "cpu" runs on
// a GPU through "cuda", and a "cuda" model that falls back to the CPU
// through "cpu". errc::unavailable when no backend has that name.
caf::expected<backend_ptr> load_with_backend(std::string_view name,
                                             const model_spec& spec,
                                             device_choice where,
                                             const load_options& opts);

// register_backend for static initialization: a program whose backend
// cannot register must not start, so it prints why and aborts.
bool register_backend_or_abort(backend_info info);

} // namespace shoal

#define SHOAL_REGISTER_BACKEND_CAT2(a, b) a##b
#define SHOAL_REGISTER_BACKEND_CAT(a, b) SHOAL_REGISTER_BACKEND_CAT2(a, b)

// Registers a backend while the program starts, before main:
//   SHOAL_REGISTER_BACKEND(shoal::backend_info{.name = "mine", ...});
#define SHOAL_REGISTER_BACKEND(...)                                            \
  [[maybe_unused]] static const bool SHOAL_REGISTER_BACKEND_CAT(               \
      shoal_backend_registered_, __LINE__) =                                   \
      ::shoal::register_backend_or_abort(__VA_ARGS__)
