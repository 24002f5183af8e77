/* The boundary between shoald and libshoal_torch.so, the TorchScript
 * backend's plugin (gpu/torch/torch_plugin.cpp), in plain C: POD structs,
 * function pointers and error strings, no C++ type and no exception.
 *
 * Why C: the plugin links libtorch, which may come from another compiler
 * and standard library than shoald (a pip torch's libtorch is built with
 * its own _GLIBCXX_USE_CXX11_ABI), so nothing whose layout depends on
 * either may cross. Why a plugin: a process that links libtorch maps ~290
 * libraries (~1 s and ~160 MB before any model), and their static TLS
 * makes threads with small stacks fail to start; loaded with
 * dlopen(RTLD_LOCAL) when a torch model first loads, nodes that serve none
 * pay nothing. */
#ifndef SHOAL_GPU_TORCH_TORCH_PLUGIN_API_H
#define SHOAL_GPU_TORCH_TORCH_PLUGIN_API_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Bumped whenever a struct or function below changes. */
#define SHOAL_TORCH_ABI 1
#define SHOAL_TORCH_MAX_RANK 8

/* The wire's dtypes, numbered as shoal::dtype (net/wire/message.hpp). */
enum shoal_torch_dtype {
  SHOAL_TORCH_F32 = 0,
  SHOAL_TORCH_F16,
  SHOAL_TORCH_BF16,
  SHOAL_TORCH_F64,
  SHOAL_TORCH_I8,
  SHOAL_TORCH_I16,
  SHOAL_TORCH_I32,
  SHOAL_TORCH_I64,
  SHOAL_TORCH_U8,
  SHOAL_TORCH_BOOL
};

/* A tensor in host memory: little-endian, row-major, contiguous. */
typedef struct shoal_torch_tensor {
  int32_t dtype;
  int32_t rank;
  int64_t shape[SHOAL_TORCH_MAX_RANK];
  void* data;
  uint64_t bytes;
} shoal_torch_tensor;

typedef struct shoal_torch_load_args {
  const char* path; /* the TorchScript file (torch.jit.save) */
  uint32_t n_inputs;
  /* The declared outputs' names, in order: a forward that returns a dict
   * is read by these keys, a tuple must have this many elements. */
  const char* const* output_names;
  uint32_t n_outputs;
  int32_t device;    /* -1: CPU, else the CUDA ordinal */
  int32_t precision; /* CUDA: floating inputs and weights as this dtype
                        (F32, F16 or BF16); outputs come back as F32 */
  int32_t threads;   /* intra-op threads of this model's batches (<= the
                        node's set_threads; 0: all of those) */
} shoal_torch_load_args;

typedef struct shoal_torch_model shoal_torch_model;

typedef struct shoal_torch_api {
  int32_t abi; /* SHOAL_TORCH_ABI */
  /* The libtorch version the plugin runs on ("1.13.1"). */
  const char* (*version)(void);
  /* CUDA devices the plugin's libtorch can use (0 when built for CPU). */
  int32_t (*cuda_devices)(void);
  /* The process-wide intra-op pool size; the node calls it once, before
   * any model loads. */
  void (*set_threads)(int32_t threads);
  /* Loads, freezes and optimises a module; NULL with the reason in err. */
  shoal_torch_model* (*load)(const shoal_torch_load_args* args, char* err,
                             size_t err_len);
  /* Runs forward on one batch. `outputs` get the declared outputs in
   * order, in host memory owned by the model, valid until its next run or
   * free. Returns 0, or -1 with the reason in err. Inputs are read in
   * place (not copied) and not written. One thread at a time per model. */
  int32_t (*run)(shoal_torch_model* model, const shoal_torch_tensor* inputs,
                 uint32_t n_inputs, shoal_torch_tensor* outputs,
                 uint32_t n_outputs, char* err, size_t err_len);
  /* CUDA: device bytes this replica's allocator holds (allocated and
   * reserved); zero on the CPU. */
  void (*memory)(shoal_torch_model* model, uint64_t* allocated,
                 uint64_t* reserved);
  void (*free)(shoal_torch_model* model);
} shoal_torch_api;

/* The plugin's one exported symbol. */
const shoal_torch_api* shoal_torch_plugin(void);

#ifdef __cplusplus
}
#endif

#endif
