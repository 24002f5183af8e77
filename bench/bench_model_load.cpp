// Model loading and downloading, each against a baseline measured in the
// same run (the performance targets):
//   1. a local load of a ~1 GiB safetensors model from a warm page cache
//      (prepare_model with its verification record in place, load_backend,
//      which maps and populates every weight page) >= 0.7x a sequential
//      read() of the same file; the first batch-1 run after it (compute
//      over every weight) is reported beside it as time to first answer;
//   2. the loaded replica's RSS <= 1.1x its weights (one copy: the mapping);
//   3. downloads of the same file from tests/integration/range_server.py on
//      loopback with 1, 4 and 8 ranges, next to the curl CLI (reported, no
//      target), and a second fetch into the same cache (nothing downloaded).
//
//   bench_model_load [--size-mib N | --quick] [--rounds R] [--dir PARENT]
//                    [--keep] [--skip-download] [--server SCRIPT]
//                    [--json FILE]
//
// Everything lives in a fresh directory under PARENT (/tmp by default). The
// process forks at once: the child runs the benchmark and the parent waits,
// then removes the directory whatever became of the child (an exception, a
// crash, a signal), so that a failed run leaves no GiB files behind. The
// HTTP server is stopped by pid at the end, and dies with the child
// (PR_SET_PDEATHSIG) if the child dies first.
#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include <fcntl.h>
#include <malloc.h>
#include <poll.h>
#include <spawn.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <spdlog/spdlog.h>

#include "bench/harness/cli.hpp"
#include "bench/harness/proc_stats.hpp"
#include "bench/harness/report.hpp"
#include "bench/harness/run.hpp"
#include "bench/harness/stats.hpp"
#include "gpu/backend.hpp"
#include "gpu/model/manifest.hpp"
#include "net/wire/error.hpp"
#include "runtime/model/model_store.hpp"
#include "runtime/model/repository.hpp"
#include "tests/support/process.hpp"

extern char** environ;

using namespace shoal;
namespace fs = std::filesystem;
using bench_clock = std::chrono::steady_clock;

namespace {

using bench::bench_error;
using bench::check_row;
using bench::json;
using bench::median;

// -- helpers -----------------------------------------------------------------

std::string errno_text(const std::string& what) {
  return what + ": " + std::strerror(errno);
}

void check(const caf::error& err, const std::string& what) {
  if (err) {
    throw bench_error{what + ": " + reason_of(err)};
  }
}

template <class T>
T take(caf::expected<T>&& x, const std::string& what) {
  if (!x) {
    throw bench_error{what + ": " + reason_of(x.error())};
  }
  return std::move(*x);
}

double seconds_since(bench_clock::time_point t0) {
  return std::chrono::duration<double>(bench_clock::now() - t0).count();
}

void write_all(int fd, const void* data, size_t size, const std::string& path) {
  auto* p = static_cast<const char*>(data);
  while (size > 0) {
    auto n = ::write(fd, p, size);
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n < 0) {
      throw bench_error{errno_text("write " + path)};
    }
    p += n;
    size -= static_cast<size_t>(n);
  }
}

struct options {
  bench::common_options common;
  uint64_t size_mib = 1024;
  int rounds = 3;
  std::string parent = "/tmp";
  bool keep = false;
  bool skip_download = false;
  // meson passes the source tree; __FILE__ would be relative to the build
  // directory, which is not where a benchmark runs.
  std::string server_script = (fs::path{SHOAL_SOURCE_ROOT} / "tests" /
                               "integration" / "range_server.py")
                                  .string();
  std::string python = "/usr/bin/python3";
  std::string curl = "/usr/bin/curl";
};

options parse_args(int argc, char** argv) {
  options o;
  bench::arg_parser p{"bench_model_load",
                      "model loading against read(), downloads against curl"};
  p.add_common(o.common, "a 256 MiB model", false);
  p.option("--size-mib", "N", o.size_mib, "model size (1024)");
  p.option("--rounds", "R", o.rounds, "rounds, medians reported (3)");
  p.option("--dir", "PARENT", o.parent,
           "where the temporary directory is made (/tmp)");
  p.flag("--keep", o.keep, "leave the temporary directory behind");
  p.flag("--skip-download", o.skip_download, "no download phase");
  p.option("--server", "SCRIPT", o.server_script,
           "the range server (tests/integration/range_server.py)");
  p.parse(argc, argv);
  if (o.common.quick && !p.given("--size-mib")) {
    o.size_mib = 256;
  }
  o.rounds = std::max(1, o.rounds);
  if (o.size_mib == 0) {
    std::fprintf(stderr, "--size-mib must be positive\n");
    std::exit(2);
  }
  return o;
}

// -- the model ---------------------------------------------------------------

// Four square dense layers (relu between them) and a 16-wide output layer,
// f32: the most weight bytes for the least compute, so that a batch-1 run
// (a matrix-vector product per layer) is bandwidth-bound like the read it
// is compared with.
constexpr int square_layers = 4;
constexpr uint64_t model_outputs = 16;
const std::string model_name = "big";
constexpr uint64_t model_version = 1;

uint64_t width_for(uint64_t size_mib) {
  auto h = std::sqrt(static_cast<double>(size_mib) * 1048576.0 /
                     (square_layers * sizeof(float)));
  return std::max<uint64_t>(64,
                            static_cast<uint64_t>(std::llround(h / 64)) * 64);
}

struct tensor_plan {
  std::string name;
  uint64_t rows = 0;
  uint64_t cols = 0; // 0: a vector of `rows`
  uint64_t floats() const { return cols ? rows * cols : rows; }
};

std::vector<tensor_plan> plan_tensors(uint64_t width) {
  std::vector<tensor_plan> ts;
  for (int i = 0; i < square_layers; ++i) {
    auto l = "l" + std::to_string(i);
    ts.push_back({l + ".weight", width, width});
    ts.push_back({l + ".bias", width, 0});
  }
  ts.push_back({"out.weight", model_outputs, width});
  ts.push_back({"out.bias", model_outputs, 0});
  return ts;
}

struct model_files {
  fs::path dir; // <repo>/big/1
  fs::path weights;
  uint64_t file_bytes = 0;
  uint64_t weight_bytes = 0; // the data region: what a replica must hold
  uint64_t width = 0;
};

// Uniform floats with variance 1/fan_in keep activations at their scale
// through the layers, so the output is finite and checkable. xorshift64: a
// GiB of floats in a second.
void write_random_floats(int fd, const tensor_plan& t, uint64_t& state,
                         std::vector<float>& chunk, const std::string& path) {
  float a = t.cols ? std::sqrt(3.0f / static_cast<float>(t.cols)) : 0.01f;
  for (uint64_t left = t.floats(); left > 0;) {
    auto n = static_cast<size_t>(std::min<uint64_t>(left, chunk.size()));
    for (size_t k = 0; k < n; ++k) {
      state ^= state << 13;
      state ^= state >> 7;
      state ^= state << 17;
      float u = static_cast<float>(state >> 40) * (1.0f / 16777216.0f);
      chunk[k] = (2.0f * u - 1.0f) * a;
    }
    write_all(fd, chunk.data(), n * sizeof(float), path);
    left -= n;
  }
}

// The safetensors header of the plan; `data_bytes` gets the data size.
std::string weights_header(const std::vector<tensor_plan>& ts,
                           uint64_t& data_bytes) {
  std::string header = "{";
  uint64_t offset = 0;
  for (size_t i = 0; i < ts.size(); ++i) {
    auto& t = ts[i];
    auto bytes = t.floats() * sizeof(float);
    header += (i > 0 ? ",\"" : "\"") + t.name +
              "\":{\"dtype\":\"F32\",\"shape\":[" + std::to_string(t.rows);
    if (t.cols) {
      header += ',' + std::to_string(t.cols);
    }
    header += "],\"data_offsets\":[" + std::to_string(offset) + ',' +
              std::to_string(offset + bytes) + "]}";
    offset += bytes;
  }
  header += "}";
  // Padded to a multiple of 8 as Hugging Face does: the data starts
  // aligned, so the backend uses the f32 weights in the mapping, uncopied.
  header.append((8 - header.size() % 8) % 8, ' ');
  data_bytes = offset;
  return header;
}

// Streams the file in 4 MiB chunks instead of building it in memory for
// write_safetensors: a GiB vector would double the peak and leave freed
// pages with the allocator that blur the RSS measurement.
void write_weights(model_files& m) {
  auto ts = plan_tensors(m.width);
  uint64_t data_bytes = 0;
  auto header = weights_header(ts, data_bytes);
  auto path = m.weights.string();
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    throw bench_error{errno_text("create " + path)};
  }
  try {
    uint64_t len = header.size(); // little-endian, like the host
    write_all(fd, &len, sizeof(len), path);
    write_all(fd, header.data(), header.size(), path);
    std::vector<float> chunk(size_t{1} << 20);
    uint64_t state = 0x9e3779b97f4a7c15ull;
    for (auto& t : ts) {
      write_random_floats(fd, t, state, chunk, path);
    }
    // Written back now, so that a GiB of dirty pages is not flushed to disk
    // under the timed phases.
    if (::fdatasync(fd) != 0) {
      throw bench_error{errno_text("fdatasync " + path)};
    }
  } catch (...) {
    ::close(fd);
    throw;
  }
  ::close(fd);
  m.weight_bytes = data_bytes;
  m.file_bytes = sizeof(uint64_t) + header.size() + data_bytes;
}

void write_manifest(const model_files& m, const std::string& sha256) {
  std::ofstream out{m.dir / "model.toml"};
  out << "backend = \"cpu\"\n\n"
      << "[[inputs]]\nname = \"x\"\ndtype = \"f32\"\nshape = [-1, " << m.width
      << "]\n\n"
      << "[[outputs]]\nname = \"y\"\ndtype = \"f32\"\nshape = [-1, "
      << model_outputs << "]\n\n"
      << "[batching]\nmax_batch = 1\nmax_delay_us = 0\n\n"
      << "[weights]\nfile = \"model.safetensors\"\n\n"
      << "[files]\n\"model.safetensors\" = \"" << sha256 << "\"\n";
  for (int i = 0; i < square_layers; ++i) {
    out << "\n[[layers]]\nop = \"dense\"\nweight = \"l" << i
        << ".weight\"\nbias = \"l" << i << ".bias\"\n"
        << "\n[[layers]]\nop = \"relu\"\n";
  }
  out << "\n[[layers]]\nop = \"dense\"\nweight = \"out.weight\"\n"
      << "bias = \"out.bias\"\n";
  out.close();
  if (!out) {
    throw bench_error{"cannot write " + (m.dir / "model.toml").string()};
  }
}

// -- local load ---------------------------------------------------------------

// The baseline: bringing the file's bytes into this process with plain
// read()s from the page cache, into one reused buffer.
double read_seconds(const std::string& path, std::vector<char>& buf,
                    uint64_t expect) {
  auto t0 = bench_clock::now();
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    throw bench_error{errno_text("open " + path)};
  }
  uint64_t total = 0;
  for (;;) {
    auto n = ::read(fd, buf.data(), buf.size());
    if (n < 0) {
      if (errno == EINTR) {
        continue;
      }
      ::close(fd);
      throw bench_error{errno_text("read " + path)};
    }
    if (n == 0) {
      break;
    }
    total += static_cast<uint64_t>(n);
  }
  ::close(fd);
  auto s = seconds_since(t0);
  if (total != expect) {
    throw bench_error{path + ": read " + std::to_string(total) +
                      " bytes, expected " + std::to_string(expect)};
  }
  return s;
}

// Not a target: what a loader that copies would pay, reading the file into
// a buffer of its own (fresh anonymous memory, faulted in and zeroed by the
// kernel as the reads fill it). The alternative to mapping the file.
double read_copy_seconds(const std::string& path, uint64_t size) {
  auto t0 = bench_clock::now();
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    throw bench_error{errno_text("open " + path)};
  }
  // mmap, not new[]: munmap hands it back at once, outside the RSS rounds.
  void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) {
    ::close(fd);
    throw bench_error{errno_text("mmap anonymous")};
  }
  auto* dst = static_cast<char*>(p);
  uint64_t total = 0;
  while (total < size) {
    auto n =
        ::read(fd, dst + total, std::min<uint64_t>(size - total, 1u << 30));
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n <= 0) {
      break;
    }
    total += static_cast<uint64_t>(n);
  }
  ::close(fd);
  ::munmap(p, size);
  auto s = seconds_since(t0);
  if (total != size) {
    throw bench_error{path + ": short read into a buffer"};
  }
  return s;
}

volatile uint64_t scan_sink;

// Not a target, a floor that explains the load: mapping the file as the
// safetensors reader does (MAP_PRIVATE, MADV_WILLNEED) and reading every
// byte once, computing nothing. What separates it from read() is the cost
// of reaching page-cache pages through a fresh mapping (faults, page
// walks), which any zero-copy load pays once.
double mmap_scan_seconds(const std::string& path, uint64_t size) {
  auto t0 = bench_clock::now();
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    throw bench_error{errno_text("open " + path)};
  }
  void* p = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (p == MAP_FAILED) {
    throw bench_error{errno_text("mmap " + path)};
  }
  ::madvise(p, size, MADV_WILLNEED);
  // Four accumulators: a streaming, vectorizable read, as fast as a core
  // reads memory, so that the mapping is what is measured.
  auto* words = static_cast<const uint64_t*>(p);
  uint64_t acc[4] = {0, 0, 0, 0};
  auto n = size / sizeof(uint64_t);
  for (uint64_t i = 0; i + 4 <= n; i += 4) {
    for (int k = 0; k < 4; ++k) {
      acc[k] += words[i + k];
    }
  }
  scan_sink = acc[0] ^ acc[1] ^ acc[2] ^ acc[3];
  ::munmap(p, size);
  return seconds_since(t0);
}

struct rss_kib {
  uint64_t vm = 0;   // VmRSS
  uint64_t anon = 0; // RssAnon: heap, stacks, copies
  uint64_t file = 0; // RssFile: mapped file pages, the weights among them
};

rss_kib read_rss() {
  std::ifstream in{"/proc/self/status"};
  rss_kib r;
  std::string line;
  while (std::getline(in, line)) {
    unsigned long long v = 0;
    if (std::sscanf(line.c_str(), "VmRSS: %llu", &v) == 1) {
      r.vm = v;
    } else if (std::sscanf(line.c_str(), "RssAnon: %llu", &v) == 1) {
      r.anon = v;
    } else if (std::sscanf(line.c_str(), "RssFile: %llu", &v) == 1) {
      r.file = v;
    }
  }
  return r;
}

double to_mib(uint64_t bytes) {
  return static_cast<double>(bytes) / 1048576.0;
}

struct load_sample {
  double prepare = 0;   // prepare_model (a stat and the record, or sha256)
  double open = 0;      // load_backend: mmap, header, graph
  double first_run = 0; // the first batch after the load
  double warm_run = 0;  // a second run
  rss_kib before, after;
  // Loaded = verified, parsed, and every weight page mapped and resident
  // (the safetensors reader populates the mapping), i.e. ready to serve.
  double total() const { return prepare + open; }
  double delta_mib() const {
    return (int64_t(after.vm) - int64_t(before.vm)) / 1024.0;
  }
};

std::vector<tensor> model_input(uint64_t width) {
  tensor t;
  t.name = "x";
  t.type = dtype::f32;
  t.shape = {1, width};
  std::vector<float> v(width);
  for (size_t i = 0; i < v.size(); ++i) {
    v[i] = static_cast<float>(i % 17) / 8.0f - 1.0f;
  }
  t.data.resize(width * sizeof(float));
  std::memcpy(t.data.data(), v.data(), t.data.size());
  std::vector<tensor> inputs;
  inputs.push_back(std::move(t));
  return inputs;
}

void check_output(const std::vector<tensor>& out) {
  if (out.size() != 1 ||
      out[0].shape != std::vector<uint64_t>{1, model_outputs}) {
    throw bench_error{"run: unexpected output shape"};
  }
  std::vector<float> y(model_outputs);
  std::memcpy(y.data(), out[0].data.data(), y.size() * sizeof(float));
  for (auto v : y) {
    if (!std::isfinite(v)) {
      throw bench_error{"run: non-finite output"};
    }
  }
}

// One replica from nothing to ready with every weight resident. The
// backend is dropped on return, unmapping the weights, so that the next
// round starts from the same place.
load_sample load_once(const model_spec& spec, const store_config& cfg,
                      const std::vector<tensor>& inputs) {
  load_sample s;
  // Chunks freed by the previous round but kept by the allocator would
  // otherwise hide (or be counted as) this replica's memory.
  ::malloc_trim(0);
  s.before = read_rss();
  auto t0 = bench_clock::now();
  check(prepare_model(spec, cfg), "prepare_model");
  auto t1 = bench_clock::now();
  auto be = take(load_backend(spec), "load_backend");
  auto t2 = bench_clock::now();
  auto out = take(be->run(inputs, 1), "run");
  auto t3 = bench_clock::now();
  s.after = read_rss();
  check_output(out);
  auto t4 = bench_clock::now();
  take(be->run(inputs, 1), "second run");
  s.warm_run = seconds_since(t4);
  using dsec = std::chrono::duration<double>;
  s.prepare = dsec(t1 - t0).count();
  s.open = dsec(t2 - t1).count();
  s.first_run = dsec(t3 - t2).count();
  return s;
}

// -- downloads ---------------------------------------------------------------

class server_process {
public:
  // Starts range_server.py on a free port; it prints the port first.
  server_process(const options& opt, const fs::path& dir) {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) {
      throw bench_error{errno_text("pipe")};
    }
    shoal::test::spawn_options so;
    so.death_signal = SIGTERM; // dies with us even if we crash before stop()
    auto d = dir.string();
    proc_ = std::make_unique<shoal::test::child_process>(
        [&] {
          ::dup2(fds[1], STDOUT_FILENO);
          ::execl(opt.python.c_str(), opt.python.c_str(),
                  opt.server_script.c_str(), "--dir", d.c_str(), "--port", "0",
                  static_cast<char*>(nullptr));
          return 127;
        },
        std::string{}, so);
    ::close(fds[1]);
    port_ = std::atoi(read_line(fds[0]).c_str());
    ::close(fds[0]);
    if (port_ <= 0 || port_ > 65535) {
      throw bench_error{"range server (" + opt.python + " " +
                        opt.server_script + ") did not print its port"};
    }
  }

  void stop() { proc_->stop(std::chrono::seconds{10}); }

  int port() const { return port_; }

  // The server's CPU time so far: near 1 s per second of transfer means its
  // GIL-bound Python is the bottleneck.
  double cpu_seconds() const { return bench::cpu_seconds(proc_->pid()); }

private:
  // One line, waiting at most 15 s for each byte.
  static std::string read_line(int fd) {
    std::string line;
    for (;;) {
      pollfd p{fd, POLLIN, 0};
      char c;
      if (::poll(&p, 1, 15000) <= 0 || ::read(fd, &c, 1) != 1 || c == '\n') {
        return line;
      }
      line.push_back(c);
    }
  }

  std::unique_ptr<shoal::test::child_process> proc_;
  int port_ = 0;
};

struct fetch_sample {
  double transfer = 0; // until the last body byte
  double total = 0;    // and the verification, fsync and rename
  double server_cpu = 0;
};

fetch_sample run_curl(const options& opt, server_process& srv,
                      const std::string& url, const fs::path& out,
                      uint64_t expect) {
  auto dest = out.string();
  // -f only turns an HTTP error into an exit status; it costs nothing.
  std::vector<std::string> args{opt.curl, "-s", "-f", "-o", dest, url};
  std::vector<char*> argv;
  for (auto& a : args) {
    argv.push_back(a.data());
  }
  argv.push_back(nullptr);
  fetch_sample s;
  auto cpu0 = srv.cpu_seconds();
  auto t0 = bench_clock::now();
  pid_t pid;
  // posix_spawn rather than fork: no atfork handlers (OpenBLAS has one)
  // inside the timed region.
  if (int rc = ::posix_spawn(&pid, opt.curl.c_str(), nullptr, nullptr,
                             argv.data(), environ);
      rc != 0) {
    throw bench_error{"spawn " + opt.curl + ": " + std::strerror(rc)};
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  s.total = s.transfer = seconds_since(t0);
  s.server_cpu = srv.cpu_seconds() - cpu0;
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    throw bench_error{"curl " + url + " failed (status " +
                      std::to_string(status) + ")"};
  }
  std::error_code ec;
  if (fs::file_size(out, ec) != expect) {
    throw bench_error{"curl " + url + ": wrong size"};
  }
  fs::remove(out, ec);
  return s;
}

fetch_sample run_fetch(server_process& srv, const std::string& url,
                       const store_file& file, const fs::path& cache,
                       size_t ranges, uint64_t expect) {
  fetch_options o;
  o.cache_dir = cache.string();
  o.parallel_ranges = ranges;
  bench_clock::time_point last_byte{};
  o.progress = [&](const std::string&, uint64_t done, uint64_t total) {
    if (total > 0 && done >= total && last_byte == bench_clock::time_point{}) {
      last_byte = bench_clock::now();
    }
  };
  fetch_sample s;
  auto cpu0 = srv.cpu_seconds();
  auto t0 = bench_clock::now();
  auto stats = take(fetch_model(url, model_name, model_version, {file}, o),
                    "fetch_model");
  s.total = seconds_since(t0);
  s.server_cpu = srv.cpu_seconds() - cpu0;
  s.transfer = last_byte == bench_clock::time_point{}
                   ? s.total
                   : std::chrono::duration<double>(last_byte - t0).count();
  if (stats.files_fetched != 1 || stats.bytes_downloaded != expect) {
    throw bench_error{"fetch_model: fetched " +
                      std::to_string(stats.files_fetched) + " files, " +
                      std::to_string(stats.bytes_downloaded) +
                      " bytes; expected 1 file of " + std::to_string(expect)};
  }
  return s;
}

// Variant 0 is the curl CLI, the others fetch_model with that many ranges
// (1: one plain GET, as parallel_ranges = 1 disables splitting).
const std::vector<size_t> variants{0, 1, 4, 8};

std::string variant_name(size_t n) {
  if (n == 0) {
    return "curl CLI";
  }
  return "fetch_model, " + std::to_string(n) + (n > 1 ? " ranges" : " range");
}

struct download_result {
  std::vector<std::vector<fetch_sample>> samples; // per variant
  fetch_stats again; // a second fetch into a cache that holds the file
  double again_s = 0;
};

// Rounds of every client in an order that rotates, each into a fresh
// cache; returns the last round's 8-range cache, kept for the reuse check.
fs::path download_rounds(const options& opt, server_process& srv,
                         const std::string& url, const store_file& file,
                         const model_files& m, const fs::path& dl,
                         download_result& d) {
  auto mb = m.file_bytes / 1e6;
  d.samples.assign(variants.size(), {});
  fs::path reuse_cache;
  for (int r = 0; r < opt.rounds; ++r) {
    std::printf("  round %d:", r + 1);
    for (size_t k = 0; k < variants.size(); ++k) {
      auto v = (k + static_cast<size_t>(r)) % variants.size();
      auto n = variants[v];
      fetch_sample s;
      if (n == 0) {
        s = run_curl(opt, srv, url + "/model.safetensors", dl / "curl.out",
                     m.file_bytes);
        std::printf("  curl %.0f", mb / s.transfer);
      } else {
        auto cache =
            dl / ("cache-" + std::to_string(r) + "-" + std::to_string(n));
        s = run_fetch(srv, url, file, cache, n, m.file_bytes);
        std::printf("  %zu range%s %.0f (%.0f)", n, n > 1 ? "s" : "",
                    mb / s.transfer, mb / s.total);
        if (r + 1 == opt.rounds && n == 8) {
          reuse_cache = cache;
        } else {
          fs::remove_all(cache);
        }
      }
      d.samples[v].push_back(s);
    }
    std::printf(" MB/s\n");
  }
  return reuse_cache;
}

struct download_row {
  std::string client;
  size_t ranges = 0; // 0: curl
  double transfer_mbs = 0, total_mbs = 0, vs_curl = 0, verify_s = 0;
  double server_cpu = 0; // CPU seconds per second of transfer
};

std::vector<download_row> download_rows(const download_result& d, double mb) {
  auto transfer = [&](size_t v) {
    std::vector<double> xs;
    for (auto& s : d.samples[v]) {
      xs.push_back(s.transfer);
    }
    return median(xs);
  };
  auto curl_t = transfer(0);
  std::vector<download_row> rows;
  for (size_t v = 0; v < variants.size(); ++v) {
    std::vector<double> tot, after, cpu;
    for (auto& s : d.samples[v]) {
      tot.push_back(s.total);
      after.push_back(s.total - s.transfer);
      cpu.push_back(s.server_cpu / s.transfer);
    }
    auto t = transfer(v);
    rows.push_back({variant_name(variants[v]), variants[v], mb / t,
                    mb / median(tot), curl_t / t, median(after), median(cpu)});
  }
  return rows;
}

// Says when curl is close to fetch_model and what the server's CPU time
// suggests: whether the Python server is the limit is read off its CPU
// time, not assumed (one process under the GIL saturates near 100% of a
// core).
void print_download_notes(const std::vector<download_row>& rows) {
  double best = 0, single = 0, multi = 0, max_cpu = 0;
  for (auto& r : rows) {
    max_cpu = std::max(max_cpu, r.server_cpu);
    best = r.ranges > 0 ? std::max(best, r.transfer_mbs) : best;
    single = r.ranges == 1 ? r.transfer_mbs : single;
    multi = r.ranges > 1 ? std::max(multi, r.transfer_mbs) : multi;
  }
  auto curl = rows.front().transfer_mbs;
  auto cores = ::sysconf(_SC_NPROCESSORS_ONLN);
  if (best >= 0.8 * curl && best <= 1.25 * curl) {
    std::printf("note: curl gets %.0f MB/s on the same file, close to "
                "fetch_model's best (%.0f): the store's client is not what "
                "limits these figures. ",
                curl, best);
    if (max_cpu >= 0.8) {
      std::printf("The Python server used up to %.0f%% of a core (one "
                  "process, GIL-bound): it is the likely bottleneck.\n",
                  100 * max_cpu);
    } else {
      std::printf("The Python server used at most %.0f%% of a core, so it "
                  "is not saturated either: the limit is more likely the "
                  "%ld shared cores (loopback TCP and page-cache writes of "
                  "the received file, on a loaded VM).\n",
                  100 * max_cpu, cores);
    }
  }
  if (multi < 1.1 * single) {
    std::printf("note: parallel ranges gain little over one GET (%.0f vs "
                "%.0f MB/s): loopback has no per-connection latency or "
                "window to hide, and the server and client share %ld cores; "
                "ranges pay off on a real network link.\n",
                multi, single, cores);
  }
}

void print_downloads(const std::vector<download_row>& rows) {
  std::printf("\n%-24s %14s %16s %8s %11s %11s\n", "client", "transfer MB/s",
              "end-to-end MB/s", "vs curl", "verify s", "server CPU");
  for (auto& r : rows) {
    std::printf("%-24s %14.0f %16.0f %8.2f %11.2f %10.0f%%\n", r.client.c_str(),
                r.transfer_mbs, r.total_mbs, r.vs_curl, r.verify_s,
                100 * r.server_cpu);
  }
  std::printf("(transfer: until the last body byte; end-to-end: until "
              "fetch_model returned; verify s: the time between, the sha256 "
              "of the .part, fsync and rename. Server CPU: its CPU seconds "
              "per second of transfer.)\n");
  print_download_notes(rows);
}

json downloads_json(const std::vector<download_row>& rows,
                    const download_result& d) {
  auto clients = json::array();
  for (auto& r : rows) {
    clients.push(json::object()
                     .set("client", r.client)
                     .set("ranges", r.ranges)
                     .set("transfer_mb_per_s", r.transfer_mbs)
                     .set("end_to_end_mb_per_s", r.total_mbs)
                     .set("vs_curl", r.vs_curl)
                     .set("verify_s", r.verify_s)
                     .set("server_cpu", r.server_cpu));
  }
  return json::object()
      .set("clients", std::move(clients))
      .set("second_fetch",
           json::object()
               .set("files_reused", d.again.files_reused)
               .set("files_fetched", d.again.files_fetched)
               .set("bytes_downloaded", d.again.bytes_downloaded)
               .set("seconds", d.again_s));
}

void download_phase(const options& opt, const fs::path& root,
                    const model_files& m, const std::string& sha256,
                    double sha_seconds, bench::report& rep) {
  server_process srv{opt, root / "repo"};
  auto url = "http://127.0.0.1:" + std::to_string(srv.port()) + "/" +
             model_name + "/" + std::to_string(model_version);
  store_file file{"model.safetensors", sha256};
  auto dl = root / "dl";
  fs::create_directories(dl);
  std::printf("\ndownload of %.1f MB from range_server.py on 127.0.0.1:%d "
              "(fresh cache each time; %d rounds, order rotating)\n",
              m.file_bytes / 1e6, srv.port(), opt.rounds);
  download_result d;
  auto reuse_cache = download_rounds(opt, srv, url, file, m, dl, d);
  // A second fetch into a cache that holds the file must fetch nothing.
  fetch_options o;
  o.cache_dir = reuse_cache.string();
  auto t0 = bench_clock::now();
  d.again = take(fetch_model(url, model_name, model_version, {file}, o),
                 "second fetch_model");
  d.again_s = seconds_since(t0);
  fs::remove_all(reuse_cache);
  srv.stop();
  auto rows = download_rows(d, m.file_bytes / 1e6);
  print_downloads(rows);
  rep.doc().set("downloads", downloads_json(rows, d));
  bool ok = d.again.files_reused == 1 && d.again.files_fetched == 0 &&
            d.again.bytes_downloaded == 0;
  std::printf("second fetch_model into the same cache: files_reused %llu, "
              "files_fetched %llu, bytes_downloaded %llu, in %.4f s (a "
              "sha256 of the file took %.2f s above)  %s\n",
              static_cast<unsigned long long>(d.again.files_reused),
              static_cast<unsigned long long>(d.again.files_fetched),
              static_cast<unsigned long long>(d.again.bytes_downloaded),
              d.again_s, sha_seconds, ok ? "OK" : "FAIL");
  if (!ok) {
    throw bench_error{"second fetch_model downloaded again"};
  }
}

// -- the run -----------------------------------------------------------------

// The generated model, its spec and the store it is prepared from.
struct model_setup {
  model_files m;
  std::string sha;
  model_spec spec;
  store_config cfg;
  double gen_s = 0, sha_s = 0, first_prepare_s = 0;
};

model_setup setup_model(const options& opt, const fs::path& root) {
  model_setup s;
  auto& m = s.m;
  m.width = width_for(opt.size_mib);
  m.dir = root / "repo" / model_name / std::to_string(model_version);
  m.weights = m.dir / "model.safetensors";
  fs::create_directories(m.dir);
  auto t0 = bench_clock::now();
  write_weights(m);
  s.gen_s = seconds_since(t0);
  t0 = bench_clock::now();
  s.sha = take(sha256_file(m.weights.string()), "sha256_file");
  s.sha_s = seconds_since(t0);
  write_manifest(m, s.sha);
  s.spec = take(parse_manifest((m.dir / "model.toml").string(), model_name,
                               model_version),
                "parse_manifest");
  s.cfg.repository = (root / "repo").string();
  s.cfg.cache_dir = (root / "cache").string();
  fs::create_directories(s.cfg.cache_dir);
  auto gb = m.file_bytes / 1e9;
  std::printf("\nsetup\n  wrote %.1f MiB (%.1f MiB of weights) in %.2f s, "
              "fdatasync'd\n  sha256_file: %.2f s (%.2f GB/s)\n",
              to_mib(m.file_bytes), to_mib(m.weight_bytes), s.gen_s, s.sha_s,
              gb / s.sha_s);
  // The first prepare has no verification record: it hashes the file and
  // writes the record that every later prepare finds.
  t0 = bench_clock::now();
  check(prepare_model(s.spec, s.cfg), "first prepare_model");
  s.first_prepare_s = seconds_since(t0);
  std::printf("  first prepare_model (no record: full sha256): %.2f s "
              "(%.2f GB/s)\n",
              s.first_prepare_s, gb / s.first_prepare_s);
  return s;
}

// Per round: the read() baseline, the information floors and the load.
struct local_rounds {
  std::vector<double> reads, copies, scans, loads, prepares, opens, firsts,
      warms, deltas, anon, file;

  void add(double rd, double copy, double scan, const load_sample& s) {
    reads.push_back(rd);
    copies.push_back(copy);
    scans.push_back(scan);
    loads.push_back(s.total());
    prepares.push_back(s.prepare);
    opens.push_back(s.open);
    firsts.push_back(s.first_run);
    warms.push_back(s.warm_run);
    deltas.push_back(s.delta_mib());
    anon.push_back((int64_t(s.after.anon) - int64_t(s.before.anon)) / 1024.0);
    file.push_back((int64_t(s.after.file) - int64_t(s.before.file)) / 1024.0);
  }
};

local_rounds local_phase(const options& opt, const model_setup& ms) {
  // Untimed warm-up: the first BLAS call starts OpenBLAS's threads and
  // allocates its buffers, once per process, not once per replica.
  auto inputs = model_input(ms.m.width);
  auto warm = load_once(ms.spec, ms.cfg, inputs);
  std::printf("  warm-up load (untimed): %.3f s\n", warm.total());
  auto weights = ms.m.weights.string();
  auto bytes = ms.m.file_bytes;
  std::vector<char> buf(size_t{1} << 20);
  read_seconds(weights, buf, bytes); // the page cache is warm now
  auto gb = bytes / 1e9;
  std::printf("\nlocal load from a warm page cache, GB/s of the %.1f MiB "
              "file\n",
              to_mib(bytes));
  local_rounds lr;
  for (int r = 0; r < opt.rounds; ++r) {
    auto rd = read_seconds(weights, buf, bytes);
    auto copy = read_copy_seconds(weights, bytes);
    auto scan = mmap_scan_seconds(weights, bytes);
    auto s = load_once(ms.spec, ms.cfg, inputs);
    lr.add(rd, copy, scan, s);
    std::printf(
        "  round %d: read %.2f | read+copy %.2f | mmap+scan %.2f | load %.2f "
        "(%.3f s: prepare %.4f, load_backend %.4f, first run "
        "%.3f; second run %.3f) | RSS +%.0f MiB\n",
        r + 1, gb / rd, gb / copy, gb / scan, gb / s.total(), s.total(),
        s.prepare, s.open, s.first_run, s.warm_run, s.delta_mib());
  }
  return lr;
}

void local_checks(const model_setup& ms, const local_rounds& lr,
                  bench::report& rep) {
  auto gb = ms.m.file_bytes / 1e9;
  auto read_gbs = gb / median(lr.reads);
  std::printf("\nmedians: prepare_model %.4f s, load_backend %.4f s, first "
              "run %.3f s, second run %.3f s; mmap+scan %.2f GB/s\n",
              median(lr.prepares), median(lr.opens), median(lr.firsts),
              median(lr.warms), gb / median(lr.scans));
  std::printf("RSS delta (median): VmRSS %+.0f MiB = RssFile %+.0f + "
              "RssAnon %+.0f\n",
              median(lr.deltas), median(lr.file), median(lr.anon));
  rep.add(check_row::at_least("load: prepare+load_backend (GB/s)",
                              gb / median(lr.loads), read_gbs, 0.7)
              .decimals(2));
  rep.add(check_row::at_most("replica RSS, VmRSS delta worst (MiB)",
                             bench::max_of(lr.deltas),
                             to_mib(ms.m.weight_bytes), 1.1)
              .decimals(0));
  rep.add(check_row::info("load + first batch-1 run (GB/s)",
                          gb / (median(lr.loads) + median(lr.firsts)), read_gbs)
              .decimals(2));
  rep.add(check_row::info("read into a new buffer (GB/s)",
                          gb / median(lr.copies), read_gbs)
              .decimals(2));
  rep.add(check_row::info("mmap+scan, no compute (GB/s)", gb / median(lr.scans),
                          read_gbs)
              .decimals(2));
  rep.add(check_row::info("first prepare, full sha256 (GB/s)",
                          gb / ms.first_prepare_s, std::nan(""))
              .decimals(2));
}

json local_json(const model_setup& ms, const local_rounds& lr) {
  return json::object()
      .set("file_bytes", ms.m.file_bytes)
      .set("weight_bytes", ms.m.weight_bytes)
      .set("width", ms.m.width)
      .set("generate_s", ms.gen_s)
      .set("sha256_s", ms.sha_s)
      .set("first_prepare_s", ms.first_prepare_s)
      .set("read_s", json::array_of(lr.reads))
      .set("read_copy_s", json::array_of(lr.copies))
      .set("mmap_scan_s", json::array_of(lr.scans))
      .set("load_s", json::array_of(lr.loads))
      .set("prepare_s", json::array_of(lr.prepares))
      .set("load_backend_s", json::array_of(lr.opens))
      .set("first_run_s", json::array_of(lr.firsts))
      .set("second_run_s", json::array_of(lr.warms))
      .set("rss_delta_mib", json::array_of(lr.deltas))
      .set("rss_file_delta_mib", json::array_of(lr.file))
      .set("rss_anon_delta_mib", json::array_of(lr.anon));
}

int run_bench(const options& opt, const fs::path& root) {
  // The store logs every fetch at info; the tables say it all.
  spdlog::set_level(spdlog::level::warn);
  bench::report rep{"bench_model_load"};
  auto width = width_for(opt.size_mib);
  std::printf("bench_model_load: f32 model, %d x dense %llux%llu + dense "
              "%llux%llu (relu between), %d rounds\n",
              square_layers, static_cast<unsigned long long>(width),
              static_cast<unsigned long long>(width),
              static_cast<unsigned long long>(model_outputs),
              static_cast<unsigned long long>(width), opt.rounds);
  std::printf("machine: %ld cores, load average %s (start)\n",
              ::sysconf(_SC_NPROCESSORS_ONLN), rep.load_before().c_str());
  std::printf("temp dir: %s%s\n", root.c_str(),
              opt.keep ? " (kept)" : " (removed at the end)");
  auto ms = setup_model(opt, root);
  auto lr = local_phase(opt, ms);
  local_checks(ms, lr, rep);
  rep.print_checks("baseline: read() of the file from the page cache; for "
                   "RSS: the weights' size");
  rep.doc()["config"]
      .set("size_mib", opt.size_mib)
      .set("rounds", opt.rounds)
      .set("skip_download", opt.skip_download);
  rep.doc().set("local", local_json(ms, lr));
  if (!opt.skip_download) {
    download_phase(opt, root, ms.m, ms.sha, ms.sha_s, rep);
  }
  rep.finish();
  std::printf("\nload average %s (end)\n", rep.load_after().c_str());
  rep.write(opt.common.json);
  return 0;
}

volatile sig_atomic_t child_pid = -1;

extern "C" void forward_signal(int sig) {
  if (child_pid > 0) {
    ::kill(child_pid, sig);
  }
}

// Runs the benchmark in a child and waits for it; its exit status.
int run_in_child(const options& opt, const fs::path& root) {
  // Handlers before the fork, so that no signal finds the parent without
  // one; the child goes back to the defaults.
  struct sigaction sa {};
  sa.sa_handler = forward_signal;
  sigemptyset(&sa.sa_mask);
  for (int sig : {SIGINT, SIGTERM, SIGHUP}) {
    ::sigaction(sig, &sa, nullptr);
  }
  shoal::test::spawn_options so;
  so.death_signal = SIGTERM;
  shoal::test::child_process child{[&] {
                                     return bench::run_guarded(
                                         "bench_model_load",
                                         [&] { return run_bench(opt, root); });
                                   },
                                   std::string{}, so};
  child_pid = child.pid();
  std::optional<int> code;
  while (!(code = child.wait_exit(std::chrono::seconds{1}))) {
    // Waits as long as the benchmark runs; signals go on to it.
  }
  if (*code > 128) {
    std::fprintf(stderr, "bench_model_load: the benchmark died (%s)\n",
                 child.describe_exit().c_str());
    return 1;
  }
  return *code;
}

} // namespace

int main(int argc, char** argv) {
  auto opt = parse_args(argc, argv);
  // Line by line: a crash or a kill must not swallow what was measured.
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  return bench::run_guarded("bench_model_load", [&] {
    // Removed here, in the parent, whatever became of the child.
    shoal::test::temp_dir root{"shoal-bench-load", opt.keep, opt.parent};
    int rc = run_in_child(opt, root.path());
    if (opt.keep) {
      std::printf("kept %s\n", root.path().c_str());
    }
    return rc;
  });
}
