// The baseline of bench_torch_executor: one TorchScript module in a tight
// libtorch loop, as a program that links libtorch would run it: loaded,
// frozen and optimised for inference as the torch plugin does, in
// InferenceMode, on the same batch and thread count, the input built once.
//
//   torch_loop MODEL.pt DTYPE SHAPE THREADS SECONDS
//     DTYPE  f32 or i64 (i64 values are token ids below 1000)
//     SHAPE  the batch's shape, comma-separated: 8,3,224,224
//
// Prints `rss_start_kb N` (libtorch mapped, no model), `load_ms N`,
// `rss_loaded_kb N` and `batches_per_s X` on stdout.
#include <chrono>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <ATen/Parallel.h>
#include <torch/script.h>

namespace {

using loop_clock = std::chrono::steady_clock;

long rss_kb() {
  std::ifstream in{"/proc/self/status"};
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) {
      return std::stol(line.substr(6));
    }
  }
  return 0;
}

std::vector<int64_t> parse_shape(const std::string& text) {
  std::vector<int64_t> out;
  std::stringstream ss{text};
  std::string part;
  while (std::getline(ss, part, ',')) {
    out.push_back(std::stoll(part));
  }
  return out;
}

torch::jit::Module load(const std::string& path) {
  auto m = torch::jit::load(path);
  m.eval();
  try {
    m = torch::jit::freeze(m);
  } catch (const std::exception&) {
    // Saved frozen already.
  }
  try {
    m = torch::jit::optimize_for_inference(m);
  } catch (const std::exception&) {
    // Runs unoptimised.
  }
  return m;
}

torch::Tensor make_input(const std::string& dtype,
                         const std::vector<int64_t>& shape) {
  torch::manual_seed(1);
  if (dtype == "i64") {
    return torch::randint(0, 1000, shape, torch::kLong);
  }
  return torch::rand(shape);
}

int run(int argc, char** argv) {
  if (argc != 6) {
    std::fprintf(stderr,
                 "usage: torch_loop MODEL.pt DTYPE SHAPE THREADS SECONDS\n");
    return 2;
  }
  std::printf("rss_start_kb %ld\n", rss_kb());
  at::set_num_threads(std::stoi(argv[4]));
  c10::InferenceMode guard;
  auto t0 = loop_clock::now();
  auto module = load(argv[1]);
  std::vector<c10::IValue> inputs{make_input(argv[2], parse_shape(argv[3]))};
  // Warm as the plugin does: profiling run, optimising run.
  module.forward(inputs);
  module.forward(inputs);
  std::printf("load_ms %.1f\n",
              std::chrono::duration<double, std::milli>(loop_clock::now() - t0)
                  .count());
  std::printf("rss_loaded_kb %ld\n", rss_kb());
  auto seconds = std::chrono::duration<double>(std::stod(argv[5]));
  uint64_t n = 0;
  auto start = loop_clock::now();
  while (loop_clock::now() - start < seconds) {
    auto out = module.forward(inputs);
    ++n;
  }
  auto elapsed =
      std::chrono::duration<double>(loop_clock::now() - start).count();
  std::printf("batches_per_s %.3f\n", n / elapsed);
  return 0;
}

} // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "torch_loop: %s\n", e.what());
    return 1;
  }
}
