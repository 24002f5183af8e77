// Driver for fuzz targets in builds without libFuzzer: replays every file of
// a corpus directory, then runs deterministic mutations of it (seeded PRNG)
// for a bounded time and count, so `meson test --suite fuzz` finds
// regressions without clang.
//
// Usage: fuzz_codec CORPUS_DIR
// Environment: FUZZ_SECONDS (default 20), FUZZ_MAX_RUNS (default 5000000),
//              FUZZ_SEED (default 1).
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace {

using bytes = std::vector<uint8_t>;

// Mutations never grow an input past this; the codec's own frame limit is
// exercised by unit tests, not by allocating 64 MiB inputs here.
constexpr size_t max_input = 1 << 20;

// Markers that make a msgpack decoder claim or skip lots of memory.
constexpr uint8_t interesting[] = {
    0xdc, 0xdd, 0xde, 0xdf, 0xc6, 0xff, 0xc4, 0xc5, 0xd9, 0xda, 0xdb, 0xc9,
    0xc1, 0xc0, 0x00, 0x7f, 0x80, 0x90, 0x91, 0x9f, 0xa0, 0xcf, 0xd3, 0xe0};

uint64_t env_or(const char* name, uint64_t fallback) {
  if (auto v = std::getenv(name); v != nullptr && *v != '\0') {
    return std::strtoull(v, nullptr, 10);
  }
  return fallback;
}

bool read_file(const std::filesystem::path& p, bytes& out) {
  std::ifstream in{p, std::ios::binary};
  if (!in) {
    return false;
  }
  out.assign(std::istreambuf_iterator<char>{in},
             std::istreambuf_iterator<char>{});
  return true;
}

class mutator {
public:
  explicit mutator(uint64_t seed) : rng_(seed) {}

  size_t below(size_t n) {
    return n == 0 ? 0 : std::uniform_int_distribution<size_t>{0, n - 1}(rng_);
  }

  uint8_t any_byte() { return static_cast<uint8_t>(below(256)); }

  uint8_t special_byte() { return interesting[below(std::size(interesting))]; }

  // Applies one to four stacked mutations; `other` feeds splicing.
  void mutate(bytes& x, const bytes& other) {
    auto rounds = 1 + below(4);
    for (size_t r = 0; r < rounds; ++r) {
      mutate_once(x, other);
    }
    if (x.size() > max_input) {
      x.resize(max_input);
    }
  }

private:
  void mutate_once(bytes& x, const bytes& other) {
    switch (below(9)) {
    case 0: // bit flip
      if (!x.empty()) {
        x[below(x.size())] ^= static_cast<uint8_t>(1u << below(8));
      }
      break;
    case 1: // random byte
      if (!x.empty()) {
        x[below(x.size())] = any_byte();
      }
      break;
    case 2: // interesting byte
      if (!x.empty()) {
        x[below(x.size())] = special_byte();
      }
      break;
    case 3: // insert, mostly interesting bytes
      x.insert(x.begin() + static_cast<ptrdiff_t>(below(x.size() + 1)),
               below(2) ? special_byte() : any_byte());
      break;
    case 4: { // delete a short range
      if (x.empty()) {
        break;
      }
      auto at = below(x.size());
      auto n = std::min(x.size() - at, 1 + below(8));
      x.erase(x.begin() + static_cast<ptrdiff_t>(at),
              x.begin() + static_cast<ptrdiff_t>(at + n));
      break;
    }
    case 5: { // 32-bit length claim: a header byte followed by 0xff...
      auto at = below(x.size() + 1);
      uint8_t hdr[] = {special_byte(), 0xff, 0xff, 0xff, 0xff};
      x.insert(x.begin() + static_cast<ptrdiff_t>(at), std::begin(hdr),
               std::end(hdr));
      break;
    }
    case 6: { // splice: our head, the other's tail
      if (other.empty()) {
        break;
      }
      auto head = below(x.size() + 1);
      auto tail = below(other.size());
      x.resize(head);
      x.insert(x.end(), other.begin() + static_cast<ptrdiff_t>(tail),
               other.end());
      break;
    }
    case 7: { // duplicate a chunk (repeats keys, deepens nesting)
      if (x.empty()) {
        break;
      }
      auto at = below(x.size());
      auto n = std::min(x.size() - at, 1 + below(32));
      bytes chunk(x.begin() + static_cast<ptrdiff_t>(at),
                  x.begin() + static_cast<ptrdiff_t>(at + n));
      x.insert(x.begin() + static_cast<ptrdiff_t>(below(x.size() + 1)),
               chunk.begin(), chunk.end());
      break;
    }
    default: // truncate
      if (!x.empty()) {
        x.resize(below(x.size()));
      }
      break;
    }
  }

  std::mt19937_64 rng_;
};

} // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s CORPUS_DIR\n", argv[0]);
    return 2;
  }
  namespace fs = std::filesystem;
  std::vector<fs::path> paths;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator{argv[1], ec}) {
    if (e.is_regular_file() && e.path().filename().string()[0] != '.') {
      paths.push_back(e.path());
    }
  }
  if (ec) {
    std::fprintf(stderr, "%s: cannot read corpus %s: %s\n", argv[0], argv[1],
                 ec.message().c_str());
    return 2;
  }
  // Directory order is arbitrary; sorting keeps runs reproducible.
  std::sort(paths.begin(), paths.end());
  std::vector<bytes> corpus;
  for (const auto& p : paths) {
    bytes b;
    if (!read_file(p, b)) {
      std::fprintf(stderr, "%s: cannot read %s\n", argv[0], p.c_str());
      return 2;
    }
    LLVMFuzzerTestOneInput(b.data(), b.size());
    corpus.push_back(std::move(b));
  }
  if (corpus.empty()) {
    corpus.emplace_back(); // still fuzz from the empty input
  }
  const auto seconds = env_or("FUZZ_SECONDS", 20);
  const auto max_runs = env_or("FUZZ_MAX_RUNS", 5'000'000);
  const auto seed = env_or("FUZZ_SEED", 1);
  mutator m{seed};
  const auto start = std::chrono::steady_clock::now();
  const auto deadline = start + std::chrono::seconds(seconds);
  uint64_t runs = 0;
  bytes input;
  while (runs < max_runs) {
    // Checking the clock every run would dominate small inputs.
    if (runs % 256 == 0 && std::chrono::steady_clock::now() >= deadline) {
      break;
    }
    input = corpus[m.below(corpus.size())];
    m.mutate(input, corpus[m.below(corpus.size())]);
    LLVMFuzzerTestOneInput(input.data(), input.size());
    ++runs;
  }
  auto elapsed =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
          .count();
  std::printf("fuzz_codec: %zu corpus files, %llu mutated inputs in %.1f s "
              "(seed %llu), %llu inputs run in total\n",
              paths.size(), static_cast<unsigned long long>(runs), elapsed,
              static_cast<unsigned long long>(seed),
              static_cast<unsigned long long>(runs + paths.size()));
  return 0;
}
