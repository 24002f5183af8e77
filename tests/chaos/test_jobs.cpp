// Durable jobs against real shoald processes: the head (a standalone node,
// or a cluster's head) is SIGKILLed with jobs queued and running and
// restarted, a worker running jobs is SIGKILLed, progress frames are
// counted and queued and running jobs are cancelled (on a standalone node
// and on a cluster's worker), large results go through files, finished jobs
// expire, and a damaged store stops the node. Each test asserts what a
// client notices. Measured numbers are printed (lines starting with
// "[measured]").
#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <set>
#include <thread>

#include <csignal>

#include <gtest/gtest.h>
#include <zmq.hpp>

#include "net/client/client.hpp"
#include "net/wire/codec.hpp"
#include "net/wire/error.hpp"
#include "tests/chaos/cluster_process.hpp"

using namespace shoal;
using namespace shoal::chaos;
using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;

namespace {

double ms_between(steady::time_point a, steady::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

constexpr size_t width = 16;

// A model root: the example models plus `stepper`, a synthetic model that
// runs `steps` steps of `step_us` each per batch (y = 2x + 1).
std::string make_models(const test::temp_dir& dir, uint64_t steps,
                        uint64_t step_us, uint64_t max_batch) {
  auto root = dir.path() + "/models";
  const char* src = std::getenv("SOURCE_ROOT");
  if (src != nullptr) {
    std::filesystem::copy(std::string{src} + "/examples/models", root,
                          std::filesystem::copy_options::recursive);
  }
  std::filesystem::create_directories(root + "/stepper/1");
  std::ofstream m{root + "/stepper/1/model.toml"};
  m << "backend = \"synthetic\"\n"
       "[[inputs]]\nname = \"x\"\ndtype = \"f32\"\nshape = [-1, 16]\n"
       "[[outputs]]\nname = \"y\"\ndtype = \"f32\"\nshape = [-1, 16]\n"
       "[batching]\nmax_batch = "
    << max_batch
    << "\nmax_delay_us = 1000\n"
       "[synthetic]\nsteps = "
    << steps << "\ncost_per_step_us = " << step_us << "\n";
  return root;
}

// x[0] = n makes every job's input distinct (no cache hit, no coalescing).
request make_submit(const std::string& model, const std::string& job,
                    uint64_t n, uint8_t priority = 5) {
  request r;
  r.op = op_kind::submit;
  r.model = model;
  r.job = job;
  r.priority = priority;
  r.cache = cache_mode::bypass;
  tensor t;
  t.name = "x";
  t.type = dtype::f32;
  t.shape = {1, width};
  t.data.resize(width * 4);
  for (size_t i = 0; i < width; ++i) {
    float v = i == 0 ? static_cast<float>(n) : static_cast<float>(i);
    std::memcpy(t.data.data() + i * 4, &v, 4);
  }
  r.inputs.push_back(std::move(t));
  return r;
}

// Empty when the outputs are 2x + 1 of make_submit's input for `n`.
std::string check_outputs(uint64_t n, const reply& rep) {
  if (rep.outputs.size() != 1 || rep.outputs[0].data.size() != width * 4) {
    return "expected one output of " + std::to_string(width) + " floats";
  }
  for (size_t i = 0; i < width; ++i) {
    float got;
    std::memcpy(&got, rep.outputs[0].data.data() + i * 4, 4);
    float x = i == 0 ? static_cast<float>(n) : static_cast<float>(i);
    if (got != 2 * x + 1) {
      return "output[" + std::to_string(i) + "] = " + std::to_string(got);
    }
  }
  return {};
}

request job_op(op_kind op, const std::string& job) {
  request r;
  r.op = op;
  r.job = job;
  return r;
}

// A raw DEALER socket: sees every frame of a request (progress ones too).
class raw_client {
public:
  explicit raw_client(const std::string& endpoint)
      : sock_(ctx_, zmq::socket_type::dealer) {
    sock_.set(zmq::sockopt::linger, 0);
    sock_.connect(endpoint);
  }

  void send(const request& r) {
    std::string out;
    encode_request(r, out);
    sock_.send(zmq::buffer(out), zmq::send_flags::none);
  }

  // The next frame, or nullopt after `limit`.
  std::optional<reply> recv(std::chrono::milliseconds limit) {
    zmq::pollitem_t item{sock_.handle(), 0, ZMQ_POLLIN, 0};
    if (zmq::poll(&item, 1, limit) <= 0) {
      return std::nullopt;
    }
    zmq::message_t msg;
    if (!sock_.recv(msg)) {
      return std::nullopt;
    }
    reply rep;
    if (decode_reply(static_cast<const uint8_t*>(msg.data()), msg.size(),
                     codec_limits{}, rep)) {
      return std::nullopt;
    }
    return rep;
  }

private:
  zmq::context_t ctx_;
  zmq::socket_t sock_;
};

// Reads the frames of request `id` (a 20-step stepper job for input `n`):
// progress frames with rising `done`, then exactly one final with the right
// outputs and nothing after it. Returns the number of progress frames; the
// final goes to `final` when given.
uint64_t count_frames(raw_client& raw, uint64_t id, uint64_t n,
                      reply* final = nullptr) {
  uint64_t frames = 0;
  uint64_t last_done = 0;
  int finals = 0;
  reply last;
  while (auto f = raw.recv(5s)) {
    EXPECT_EQ(f->id, request_id::of(id));
    if (f->event == "progress") {
      EXPECT_GT(f->job.done, last_done);
      EXPECT_EQ(f->job.total, 20u);
      last_done = f->job.done;
      ++frames;
      EXPECT_EQ(finals, 0) << "progress after the final frame";
    } else {
      EXPECT_EQ(f->event, "done");
      ++finals;
      last = *f;
      // Anything after the final frame would arrive soon.
      if (auto more = raw.recv(300ms)) {
        ADD_FAILURE() << "a frame after the final one";
      }
      break;
    }
  }
  EXPECT_EQ(finals, 1);
  EXPECT_EQ(check_outputs(n, last), "");
  if (final != nullptr) {
    *final = std::move(last);
  }
  return frames;
}

class jobs : public ::testing::Test {
protected:
  void TearDown() override {
    if (cluster_ && HasFailure()) {
      std::cerr << "==== node logs ====\n" << cluster_->logs();
    }
    cluster_.reset();
  }

  void start_standalone(cluster_options opts) {
    cluster_ = std::make_unique<cluster>(std::move(opts));
    cluster_->start_standalone();
    ASSERT_TRUE(cluster_->wait_head_ready(15s)) << "the node did not answer";
  }

  // A head and one worker, w1. The head (role head) runs no replicas, so
  // every model runs on the worker.
  void start_head_and_worker(cluster_options opts) {
    cluster_ = std::make_unique<cluster>(std::move(opts));
    cluster_->start_head();
    ASSERT_TRUE(cluster_->wait_head_ready(15s)) << "the head did not answer";
    worker_ = cluster_->add_worker().name();
    ASSERT_TRUE(cluster_->wait_up({worker_}, 15s)) << "the worker is not up";
  }

  reply call(request r, std::chrono::milliseconds limit = 10s) {
    auto rep = cluster_->call(std::move(r), limit);
    EXPECT_TRUE(rep) << reason_of(rep.error());
    return rep ? *rep : reply{};
  }

  // Polls `job` until it is in a final state or `limit` passes.
  reply wait_final(const std::string& job, std::chrono::milliseconds limit) {
    auto until = steady::now() + limit;
    reply rep;
    while (steady::now() < until) {
      rep = call(job_op(op_kind::job, job));
      auto& s = rep.job.state;
      if (s == "done" || s == "failed" || s == "cancelled") {
        return rep;
      }
      std::this_thread::sleep_for(50ms);
    }
    return rep;
  }

  std::unique_ptr<cluster> cluster_;
  std::string worker_; // start_head_and_worker's worker
};

// Submits jobs `first`..`last` with mixed priorities, many in flight at once.
void submit_all(const std::string& endpoint, uint64_t first, uint64_t last,
                std::vector<double>& latencies_ms) {
  client_options o;
  o.endpoint = endpoint;
  o.timeout = 15s;
  o.retries = 0;
  auto c = client::connect(o);
  ASSERT_TRUE(c);
  std::map<uint64_t, steady::time_point> sent;
  uint64_t acked = 0;
  for (uint64_t n = first; n <= last; ++n) {
    auto r = make_submit("stepper", "job-" + std::to_string(n), n,
                         static_cast<uint8_t>(n % 10));
    sent[n] = steady::now();
    (*c)->submit(std::move(r), [&, n](caf::expected<reply> rep) {
      ASSERT_TRUE(rep) << reason_of(rep.error());
      EXPECT_EQ(rep->code, status::ok) << rep->error;
      EXPECT_EQ(rep->job.job, "job-" + std::to_string(n));
      latencies_ms.push_back(ms_between(sent[n], steady::now()));
      ++acked;
    });
    while ((*c)->in_flight() >= 32) {
      (*c)->poll(5ms);
    }
  }
  while ((*c)->in_flight() > 0) {
    (*c)->poll(10ms);
  }
  EXPECT_EQ(acked, last - first + 1);
}

} // namespace

// 500 jobs at mixed priorities; the node is SIGKILLed while some are queued
// and some running, and started again: every job ends done, once, with the
// right outputs, and submitting any id again returns the existing job.
TEST_F(jobs, head_sigkill_loses_no_accepted_job) {
  test::temp_dir dir{"shoal-jobs"};
  cluster_options co;
  // 8 rows a batch, 10 steps of 4 ms: about 63 batches, 2.5 s of work.
  co.models_root = make_models(dir, 10, 4000, 8);
  ASSERT_NO_FATAL_FAILURE(start_standalone(co));
  std::vector<double> lat;
  auto t0 = steady::now();
  ASSERT_NO_FATAL_FAILURE(submit_all(cluster_->endpoint(), 1, 500, lat));
  auto submit_ms = ms_between(t0, steady::now());
  // Some done, some running, most queued: kill now.
  std::this_thread::sleep_for(300ms);
  auto list = job_op(op_kind::jobs, "");
  list.limit = 1000;
  auto before = call(list);
  cluster_->head().signal(SIGKILL);
  cluster_->head().wait_exit(5s);
  std::map<std::string, uint64_t> states;
  for (auto& j : before.jobs) {
    ++states[j.state];
  }
  EXPECT_GT(states["queued"], 0u) << "nothing was queued at the kill";
  EXPECT_GT(states["running"], 0u) << "nothing was running at the kill";
  cluster_->restart("head");
  ASSERT_TRUE(cluster_->wait_head_ready(15s)) << "no restart";
  auto t1 = steady::now();
  std::set<std::string> seen;
  for (uint64_t n = 1; n <= 500; ++n) {
    auto id = "job-" + std::to_string(n);
    auto rep = wait_final(id, 30s);
    ASSERT_EQ(rep.job.state, "done") << id << ": " << rep.error;
    ASSERT_EQ(check_outputs(n, rep), "") << id;
    seen.insert(rep.job.job);
  }
  auto recover_ms = ms_between(t1, steady::now());
  EXPECT_EQ(seen.size(), 500u);
  // Listed once each, and a second submit returns the existing job.
  std::set<std::string> listed;
  std::string after;
  for (int page = 0; page < 10; ++page) {
    auto q = job_op(op_kind::jobs, "");
    q.limit = 100;
    q.after = after;
    auto rep = call(q);
    for (auto& j : rep.jobs) {
      EXPECT_TRUE(listed.insert(j.job).second) << "listed twice: " << j.job;
    }
    if (rep.jobs.empty()) {
      break;
    }
    after = rep.jobs.back().job;
  }
  EXPECT_EQ(listed.size(), 500u);
  for (uint64_t n = 1; n <= 500; n += 7) {
    auto rep = call(make_submit("stepper", "job-" + std::to_string(n), n));
    EXPECT_EQ(rep.code, status::ok);
    EXPECT_EQ(rep.job.state, "done") << "job-" << n;
  }
  auto m = cluster_->head_metrics();
  EXPECT_GT(sample(m, "shoal_jobs_recovered_total").value_or(0), 0);
  std::sort(lat.begin(), lat.end());
  std::cout << "[measured] 500 submits in " << submit_ms << " ms (p50 "
            << lat[lat.size() / 2] << " ms, p99 " << lat[lat.size() * 99 / 100]
            << " ms); at the kill " << states["done"] << " done, "
            << states["running"] << " running, " << states["queued"]
            << " queued; all 500 done " << recover_ms << " ms after the restart"
            << std::endl;
}

// wait with progress: frames with rising `done`, then exactly one final;
// stream: true on an infer does the same.
TEST_F(jobs, wait_and_stream_report_progress) {
  test::temp_dir dir{"shoal-jobs"};
  cluster_options co;
  co.models_root = make_models(dir, 20, 60000, 1);
  ASSERT_NO_FATAL_FAILURE(start_standalone(co));
  auto sub = call(make_submit("stepper", "p1", 3));
  ASSERT_EQ(sub.code, status::ok) << sub.error;
  raw_client raw{cluster_->endpoint()};
  auto w = job_op(op_kind::wait, "p1");
  w.id = request_id::of(uint64_t{77});
  w.progress = true;
  w.timeout_ms = 20000;
  raw.send(w);
  auto frames = count_frames(raw, 77, 3);
  EXPECT_GE(frames, 5u);
  auto inf = make_submit("stepper", "", 4);
  inf.op = op_kind::infer;
  inf.id = request_id::of(uint64_t{78});
  inf.stream = true;
  raw.send(inf);
  auto stream_frames = count_frames(raw, 78, 4);
  EXPECT_GE(stream_frames, 5u);
  std::cout << "[measured] 20-step job (60 ms a step): " << frames
            << " progress frames to wait, " << stream_frames
            << " to a streamed infer" << std::endl;
}

// A queued job and a running one are cancelled: both end cancelled, a
// waiter gets CANCELLED, the worker stops within a step and the replica
// keeps serving.
TEST_F(jobs, cancel_queued_and_running) {
  test::temp_dir dir{"shoal-jobs"};
  cluster_options co;
  co.models_root = make_models(dir, 20, 100000, 1);
  ASSERT_NO_FATAL_FAILURE(start_standalone(co));
  ASSERT_EQ(call(make_submit("stepper", "run", 1)).code, status::ok);
  ASSERT_EQ(call(make_submit("stepper", "queued", 2)).code, status::ok);
  raw_client raw{cluster_->endpoint()};
  auto w = job_op(op_kind::wait, "run");
  w.id = request_id::of(uint64_t{5});
  w.timeout_ms = 20000;
  raw.send(w);
  // Let "run" get a few steps in.
  auto until = steady::now() + 10s;
  while (call(job_op(op_kind::job, "run")).job.done < 2 &&
         steady::now() < until) {
    std::this_thread::sleep_for(20ms);
  }
  auto q = call(job_op(op_kind::cancel, "queued"));
  EXPECT_EQ(q.job.state, "cancelled");
  auto cancelled_at = steady::now();
  auto r = call(job_op(op_kind::cancel, "run"));
  EXPECT_EQ(r.job.state, "cancelled");
  auto waited = raw.recv(5s);
  ASSERT_TRUE(waited) << "the waiter got nothing";
  EXPECT_EQ(waited->code, status::cancelled);
  EXPECT_EQ(call(job_op(op_kind::job, "run")).job.state, "cancelled");
  EXPECT_EQ(call(job_op(op_kind::job, "queued")).job.state, "cancelled");
  // The replica is free again at once: a new job runs its 20 steps
  // (2 s) without waiting for the cancelled one's remaining ~17 (1.7 s).
  ASSERT_EQ(call(make_submit("stepper", "next", 9)).code, status::ok);
  auto next = wait_final("next", 20s);
  auto took = ms_between(cancelled_at, steady::now());
  EXPECT_EQ(next.job.state, "done");
  EXPECT_EQ(check_outputs(9, next), "");
  EXPECT_LT(took, 3400) << "the cancelled job's steps ran on";
  std::cout << "[measured] after cancelling a running 20 x 100 ms job, the "
               "next 2000 ms job was done "
            << took << " ms later" << std::endl;
}

// In a cluster the replica runs on a worker: wait with progress and a
// streamed infer get the worker's progress frames (through the head), with
// rising `done`, then exactly one final.
TEST_F(jobs, cluster_wait_and_stream_report_worker_progress) {
  test::temp_dir dir{"shoal-jobs"};
  cluster_options co;
  co.models_root = make_models(dir, 20, 60000, 1);
  ASSERT_NO_FATAL_FAILURE(start_head_and_worker(co));
  auto sub = call(make_submit("stepper", "cp1", 3));
  ASSERT_EQ(sub.code, status::ok) << sub.error;
  raw_client raw{cluster_->endpoint()};
  auto w = job_op(op_kind::wait, "cp1");
  w.id = request_id::of(uint64_t{91});
  w.progress = true;
  w.timeout_ms = 30000;
  raw.send(w);
  reply final;
  auto frames = count_frames(raw, 91, 3, &final);
  EXPECT_GE(frames, 5u);
  EXPECT_EQ(final.node, worker_) << "the job did not run on the worker";
  auto inf = make_submit("stepper", "", 4);
  inf.op = op_kind::infer;
  inf.id = request_id::of(uint64_t{92});
  inf.stream = true;
  raw.send(inf);
  auto stream_frames = count_frames(raw, 92, 4, &final);
  EXPECT_GE(stream_frames, 5u);
  EXPECT_EQ(final.node, worker_);
  std::cout << "[measured] 20-step job (60 ms a step) on a worker: " << frames
            << " progress frames to wait, " << stream_frames
            << " to a streamed infer" << std::endl;
}

// In a cluster, cancelling a job that runs on a worker stops the worker's
// replica within a step: the job ends cancelled, its waiter gets CANCELLED
// and nothing else, and the replica serves the next job at once.
TEST_F(jobs, cluster_cancel_stops_the_worker) {
  test::temp_dir dir{"shoal-jobs"};
  cluster_options co;
  co.models_root = make_models(dir, 20, 100000, 1);
  ASSERT_NO_FATAL_FAILURE(start_head_and_worker(co));
  ASSERT_EQ(call(make_submit("stepper", "crun", 1)).code, status::ok);
  raw_client raw{cluster_->endpoint()};
  auto w = job_op(op_kind::wait, "crun");
  w.id = request_id::of(uint64_t{6});
  w.timeout_ms = 30000;
  raw.send(w);
  // A few steps in on the worker (its progress reaches the head's jobs).
  auto until = steady::now() + 15s;
  uint64_t done = 0;
  while ((done = call(job_op(op_kind::job, "crun")).job.done) < 2 &&
         steady::now() < until) {
    std::this_thread::sleep_for(20ms);
  }
  ASSERT_GE(done, 2u) << "no progress from the worker";
  auto cancelled_at = steady::now();
  auto r = call(job_op(op_kind::cancel, "crun"));
  EXPECT_EQ(r.job.state, "cancelled");
  auto waited = raw.recv(5s);
  ASSERT_TRUE(waited) << "the waiter got nothing";
  EXPECT_EQ(waited->code, status::cancelled);
  // The replica is free again at once: a new job runs its 20 steps (2 s)
  // without waiting for the cancelled one's remaining ~17 (1.7 s).
  ASSERT_EQ(call(make_submit("stepper", "cnext", 9)).code, status::ok);
  auto next = wait_final("cnext", 20s);
  auto took = ms_between(cancelled_at, steady::now());
  EXPECT_EQ(next.job.state, "done");
  EXPECT_EQ(check_outputs(9, next), "");
  EXPECT_EQ(next.node, worker_);
  EXPECT_LT(took, 3400) << "the cancelled job's steps ran on";
  // The stopped batch's result came back long ago and answered no one.
  EXPECT_FALSE(raw.recv(300ms)) << "a second reply to the cancelled wait";
  EXPECT_EQ(call(job_op(op_kind::job, "crun")).job.state, "cancelled");
  std::cout << "[measured] after cancelling a running 20 x 100 ms job on a "
               "worker, the next 2000 ms job was done "
            << took << " ms later" << std::endl;
}

// Results over jobs.max_result_bytes live in files and come back whole;
// finished jobs expire after jobs.result_ttl_ms and answer NOT_FOUND.
TEST_F(jobs, large_results_in_files_and_expiry) {
  test::temp_dir dir{"shoal-jobs"};
  cluster_options co;
  co.models_root = make_models(dir, 0, 0, 8);
  auto results = dir.path() + "/results";
  co.extra_args = {"--set", "jobs.max_result_bytes=32",
                   "--set", "jobs.results_dir=" + results,
                   "--set", "jobs.result_ttl_ms=1500"};
  ASSERT_NO_FATAL_FAILURE(start_standalone(co));
  ASSERT_EQ(call(make_submit("stepper", "big", 5)).code, status::ok);
  auto rep = wait_final("big", 10s);
  EXPECT_EQ(rep.job.state, "done");
  EXPECT_EQ(check_outputs(5, rep), "");
  size_t files = 0;
  for (auto& e : std::filesystem::directory_iterator{results}) {
    files += e.path().extension() == ".result";
  }
  EXPECT_EQ(files, 1u);
  std::this_thread::sleep_for(3000ms);
  auto gone = call(job_op(op_kind::job, "big"));
  EXPECT_EQ(gone.code, status::not_found) << gone.error;
  files = 0;
  for (auto& e : std::filesystem::directory_iterator{results}) {
    files += e.path().extension() == ".result";
  }
  EXPECT_EQ(files, 0u) << "the expired job's result file is still there";
}

// SIGTERM with 40 jobs queued behind a running one: the node exits once
// what runs is done, well within its drain grace (the queued jobs are not
// run during the drain), and the next start runs every job, once.
TEST_F(jobs, sigterm_leaves_queued_jobs_for_the_next_start) {
  test::temp_dir dir{"shoal-jobs"};
  cluster_options co;
  // One row a batch, 10 steps of 30 ms: 12 s of work in all.
  co.models_root = make_models(dir, 10, 30000, 1);
  ASSERT_NO_FATAL_FAILURE(start_standalone(co));
  std::vector<double> lat;
  ASSERT_NO_FATAL_FAILURE(submit_all(cluster_->endpoint(), 1, 40, lat));
  std::this_thread::sleep_for(200ms);
  auto t0 = steady::now();
  cluster_->head().signal(SIGTERM);
  auto code = cluster_->head().wait_exit(20s);
  auto stop_ms = ms_between(t0, steady::now());
  ASSERT_TRUE(code) << "the node was still draining after 20 s";
  EXPECT_EQ(*code, 0);
  // The default grace is 30 s; one running batch takes 0.3 s.
  EXPECT_LT(stop_ms, 5000) << "the drain ran the queued jobs";
  cluster_->restart("head");
  ASSERT_TRUE(cluster_->wait_head_ready(15s)) << "no restart";
  for (uint64_t n = 1; n <= 40; ++n) {
    auto rep = wait_final("job-" + std::to_string(n), 30s);
    ASSERT_EQ(rep.job.state, "done") << "job-" << n << ": " << rep.error;
    EXPECT_EQ(check_outputs(n, rep), "") << "job-" << n;
  }
  std::cout << "[measured] SIGTERM with 40 jobs queued: exited after "
            << stop_ms << " ms" << std::endl;
}

// A store that is not a database stops the node with a message naming it.
TEST_F(jobs, damaged_store_stops_the_node) {
  test::temp_dir dir{"shoal-jobs"};
  auto path = dir.path() + "/jobs.db";
  {
    std::ofstream f{path};
    f << "this is not a database, and it never was one; "
      << std::string(4096, 'x');
  }
  cluster_options co;
  co.extra_args = {"--set", "jobs.path=" + path};
  cluster_ = std::make_unique<cluster>(co);
  auto& node = cluster_->start_standalone();
  auto code = node.wait_exit(15s);
  ASSERT_TRUE(code.has_value()) << "the node kept running";
  EXPECT_NE(*code, 0);
  EXPECT_NE(node.log().find(path), std::string::npos) << node.log();
}

// A worker running jobs is SIGKILLed: they run again on the other worker
// and end done, with the right outputs.
TEST_F(jobs, worker_sigkill_reruns_its_jobs) {
  test::temp_dir dir{"shoal-jobs"};
  cluster_options co;
  co.models_root = make_models(dir, 10, 100000, 4);
  co.heartbeat_ms = 50;
  co.suspect_ms = 150;
  co.timeout_ms = 500;
  cluster_ = std::make_unique<cluster>(co);
  cluster_->start_head();
  ASSERT_TRUE(cluster_->wait_head_ready(15s));
  std::vector<std::string> names{cluster_->add_worker().name(),
                                 cluster_->add_worker().name()};
  ASSERT_TRUE(cluster_->wait_up(names, 15s)) << "workers not up";
  for (uint64_t n = 1; n <= 12; ++n) {
    auto rep = call(make_submit("stepper", "w-" + std::to_string(n), n));
    ASSERT_EQ(rep.code, status::ok) << rep.error;
  }
  std::string victim;
  auto until = steady::now() + 10s;
  while (victim.empty() && steady::now() < until) {
    auto log = cluster_->head().log();
    auto pos = log.find("placing stepper v1 on ");
    if (pos != std::string::npos) {
      pos += std::strlen("placing stepper v1 on ");
      victim = log.substr(pos, log.find_first_of(" \n", pos) - pos);
    }
    std::this_thread::sleep_for(20ms);
  }
  ASSERT_FALSE(victim.empty()) << "no placement in the head log";
  // Kill as soon as the first job has started there.
  until = steady::now() + 15s;
  auto started = [&] {
    auto list = job_op(op_kind::jobs, "");
    for (auto& j : call(list).jobs) {
      if (j.state != "queued") {
        return true;
      }
    }
    return false;
  };
  while (!started() && steady::now() < until) {
    std::this_thread::sleep_for(10ms);
  }
  auto killed_at = steady::now();
  cluster_->node(victim)->signal(SIGKILL);
  uint64_t elsewhere = 0;
  for (uint64_t n = 1; n <= 12; ++n) {
    auto rep = wait_final("w-" + std::to_string(n), 40s);
    EXPECT_EQ(rep.job.state, "done") << "w-" << n << ": " << rep.error;
    EXPECT_EQ(check_outputs(n, rep), "") << "w-" << n;
    elsewhere += rep.node != victim;
  }
  // 12 jobs of 1 s batches of 4: most of the work was left on the victim.
  EXPECT_GE(elsewhere, 4u) << "the killed worker's jobs did not run again";
  std::cout << "[measured] killed " << victim
            << " with jobs running: all 12 done (" << elsewhere
            << " on the other worker) " << ms_between(killed_at, steady::now())
            << " ms after the kill" << std::endl;
}
