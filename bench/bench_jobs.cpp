// Durable jobs: submit throughput and latency (acknowledged = committed)
// against the plain infer miss path of the same node in the same run, the
// raw SQLite insert rate with the store's sync settings (WAL, synchronous
// FULL, one commit per row) as the floor of a durable submit, and the time
// a restarted node takes to queue 10,000 stored jobs again.
//
//   bench_jobs [--requests N] [--concurrency C] [--recover N] [--shoald PATH]
#include <algorithm>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <map>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include <sqlite3.h>

#include "net/client/client.hpp"
#include "net/wire/codec.hpp"
#include "net/wire/error.hpp"
#include "runtime/jobs/sqlite_job_store.hpp"
#include "tests/support/node_process.hpp"
#include "tests/support/process.hpp"

using namespace shoal;
using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;

namespace {

struct options {
  uint64_t requests = 2000;
  size_t concurrency = 16;
  uint64_t recover = 10000;
  std::string shoald;
};

struct result {
  double per_s = 0;
  double p50_ms = 0;
  double p99_ms = 0;
  uint64_t errors = 0;
};

// An echo (y = 3x + 1, [1, 256] f32) request whose input is distinct per n:
// every one misses the cache.
request echo_request(op_kind op, uint64_t n) {
  request r;
  r.op = op;
  r.model = "echo";
  r.cache = cache_mode::bypass;
  tensor t;
  t.name = "x";
  t.shape = {1, 256};
  t.data.resize(1024);
  std::memcpy(t.data.data(), &n, sizeof n);
  r.inputs.push_back(std::move(t));
  if (op == op_kind::submit) {
    r.job = "bench-" + std::to_string(n);
  }
  return r;
}

// N requests, C in flight (closed loop).
result drive(const std::string& endpoint, op_kind op, uint64_t first,
             const options& o) {
  client_options co;
  co.endpoint = endpoint;
  co.timeout = 30s;
  co.retries = 0;
  auto c = client::connect(co);
  std::vector<double> lat;
  lat.reserve(o.requests);
  result res;
  auto t0 = steady::now();
  for (uint64_t n = first; n < first + o.requests; ++n) {
    auto sent = steady::now();
    (*c)->submit(echo_request(op, n), [&, sent](caf::expected<reply> rep) {
      if (!rep || rep->code != status::ok) {
        ++res.errors;
      }
      lat.push_back(
          std::chrono::duration<double, std::milli>(steady::now() - sent)
              .count());
    });
    while ((*c)->in_flight() >= o.concurrency) {
      (*c)->poll(1ms);
    }
  }
  while ((*c)->in_flight() > 0) {
    (*c)->poll(1ms);
  }
  auto s = std::chrono::duration<double>(steady::now() - t0).count();
  std::sort(lat.begin(), lat.end());
  res.per_s = o.requests / s;
  res.p50_ms = lat[lat.size() / 2];
  res.p99_ms = lat[std::min(lat.size() - 1, lat.size() * 99 / 100)];
  return res;
}

// Raw SQLite: one row like a job's per commit, WAL and synchronous FULL.
double sqlite_inserts_per_s(const std::string& path, uint64_t n) {
  sqlite3* db = nullptr;
  sqlite3_open(path.c_str(), &db);
  sqlite3_exec(db,
               "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; "
               "CREATE TABLE t (k TEXT PRIMARY KEY, v BLOB);",
               nullptr, nullptr, nullptr);
  sqlite3_stmt* st = nullptr;
  sqlite3_prepare_v2(db, "INSERT INTO t VALUES (?1, ?2)", -1, &st, nullptr);
  std::string blob(1100, 'x'); // about a submit frame of echo
  auto t0 = steady::now();
  for (uint64_t i = 0; i < n; ++i) {
    auto k = "k" + std::to_string(i);
    sqlite3_bind_text(st, 1, k.c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_blob(st, 2, blob.data(), static_cast<int>(blob.size()),
                      SQLITE_STATIC);
    sqlite3_step(st);
    sqlite3_reset(st);
  }
  auto s = std::chrono::duration<double>(steady::now() - t0).count();
  sqlite3_finalize(st);
  sqlite3_close(db);
  return n / s;
}

// A store holding `n` queued echo jobs, written in one transaction.
void fill_store(const std::string& path, uint64_t n) {
  {
    sqlite_job_store_config sc;
    sc.path = path;
    auto store = open_sqlite_job_store(sc); // creates the schema
  }
  sqlite3* db = nullptr;
  sqlite3_open(path.c_str(), &db);
  sqlite3_exec(db, "BEGIN", nullptr, nullptr, nullptr);
  sqlite3_stmt* st = nullptr;
  sqlite3_prepare_v2(db,
                     "INSERT INTO jobs (tenant, id, state, priority, model, "
                     "version, created_ms, updated_ms, request) VALUES "
                     "('default', ?1, 0, ?2, 'echo', 2, 1, 1, ?3)",
                     -1, &st, nullptr);
  for (uint64_t i = 0; i < n; ++i) {
    std::string frame;
    encode_request(echo_request(op_kind::submit, i), frame);
    auto id = "r-" + std::to_string(i);
    sqlite3_bind_text(st, 1, id.c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_int(st, 2, static_cast<int>(i % 10));
    sqlite3_bind_blob(st, 3, frame.data(), static_cast<int>(frame.size()),
                      SQLITE_TRANSIENT);
    sqlite3_step(st);
    sqlite3_reset(st);
  }
  sqlite3_finalize(st);
  sqlite3_exec(db, "COMMIT", nullptr, nullptr, nullptr);
  sqlite3_close(db);
}

void print(const char* what, const result& r) {
  std::cout << "  " << what << ": " << static_cast<uint64_t>(r.per_s)
            << " /s, p50 " << r.p50_ms << " ms, p99 " << r.p99_ms << " ms"
            << (r.errors ? ", ERRORS " + std::to_string(r.errors) : "") << "\n";
}

// Starts a node on `store` and waits for its recovery log line.
void measure_recovery(const options& o, const test::temp_dir& dir) {
  auto path = dir.path() + "/recover.db";
  fill_store(path, o.recover);
  test::node_options no;
  no.shoald = o.shoald;
  no.args = {"--set", "jobs.path=" + path};
  auto t0 = steady::now();
  test::node_process node{no};
  std::smatch m;
  static const std::regex line{
      R"(jobs: (\d+) job\(s\) recovered and queued in ([0-9.]+) ms)"};
  auto until = steady::now() + 120s;
  std::string log;
  while (steady::now() < until) {
    log = node.log();
    if (std::regex_search(log, m, line)) {
      break;
    }
    std::this_thread::sleep_for(10ms);
  }
  auto wall = std::chrono::duration<double, std::milli>(steady::now() - t0);
  if (m.empty()) {
    std::cout << "  recovery: no recovery line in the log\n";
    return;
  }
  std::cout << "  recovery of " << m[1] << " stored jobs: all queued " << m[2]
            << " ms after the store was opened; "
            << static_cast<uint64_t>(wall.count())
            << " ms from process start to the log line\n";
}

} // namespace

int main(int argc, char** argv) {
  options o;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string k = argv[i];
    if (k == "--requests") {
      o.requests = std::stoull(argv[i + 1]);
    } else if (k == "--concurrency") {
      o.concurrency = std::stoul(argv[i + 1]);
    } else if (k == "--recover") {
      o.recover = std::stoull(argv[i + 1]);
    } else if (k == "--shoald") {
      o.shoald = argv[i + 1];
    }
  }
  test::temp_dir dir{"shoal-bench-jobs"};
  auto raw = sqlite_inserts_per_s(dir.path() + "/raw.db", 500);
  test::node_options no;
  no.shoald = o.shoald;
  test::node_process node{no};
  if (!node.wait_ready()) {
    std::cerr << "the node did not start\n" << node.log();
    return 1;
  }
  drive(node.endpoint(), op_kind::infer, 1'000'000, o); // warm up
  auto infer = drive(node.endpoint(), op_kind::infer, 0, o);
  auto submit = drive(node.endpoint(), op_kind::submit, 0, o);
  std::cout << "durable jobs, " << o.requests << " requests, " << o.concurrency
            << " in flight, model echo (cache bypass):\n";
  print("infer miss (baseline)", infer);
  print("submit (acknowledged after commit)", submit);
  std::cout << "  SQLite alone, one row per commit, WAL + synchronous FULL: "
            << static_cast<uint64_t>(raw) << " inserts/s\n"
            << "  ratio submit/infer throughput: " << submit.per_s / infer.per_s
            << "; submit/SQLite: " << submit.per_s / raw << "\n";
  measure_recovery(o, dir);
  return 0;
}
