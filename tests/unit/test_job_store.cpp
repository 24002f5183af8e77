// The SQLite job store (runtime/jobs/sqlite_job_store.hpp) and the wire
// encoding of the job ops: what the job manager relies on; and the job
// manager's answers over that store, with the router's events sent by hand.
#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include <caf/all.hpp>
#include <gtest/gtest.h>

#include "actors/jobs/job_manager.hpp"
#include "net/wire/codec.hpp"
#include "net/wire/error.hpp"
#include "runtime/jobs/sqlite_job_store.hpp"
#include "tests/support/process.hpp"

using namespace shoal;

namespace {

job_record make_job(const std::string& id, uint8_t priority = 5) {
  job_record j;
  j.tenant = "t";
  j.id = id;
  j.priority = priority;
  j.model = "echo";
  j.version = 1;
  j.created_ms = 1000;
  j.request = "frame-of-" + id;
  return j;
}

struct store_fixture : ::testing::Test {
  test::temp_dir dir{"shoal-job-store"};
  sqlite_job_store_config cfg() {
    sqlite_job_store_config c;
    c.path = dir.path() + "/jobs.db";
    c.max_result_bytes = 16;
    return c;
  }
};

struct no_job_metrics : job_metrics {
  void states(const std::vector<uint64_t>&) override {}
  void finished(const std::string&, double) override {}
  void recovered(uint64_t) override {}
};

// A job manager over a real store; its router takes the jobs and ignores
// them, and the test plays the router's part with job_events.
struct manager_fixture : store_fixture {
  caf::actor_system_config sys_cfg;
  std::unique_ptr<caf::actor_system> sys;
  std::shared_ptr<reply_sink> sink = std::make_shared<reply_sink>();
  job_manager_handle manager;
  uint64_t next_id = 1;

  void SetUp() override {
    sys = std::make_unique<caf::actor_system>(sys_cfg);
    auto store = open_sqlite_job_store(cfg());
    ASSERT_TRUE(store) << reason_of(store.error());
    // An error back (as for an unexpected message) would stop the manager.
    auto router = sys->spawn([]() { return caf::behavior{[](infer_job&) {}}; });
    auto rebuild = [](const std::string&, uint64_t) {
      return caf::expected<infer_job>{infer_job{}};
    };
    manager = sys->spawn(job_manager_actor, job_manager_config{}, *store,
                         caf::actor_cast<router_handle>(router), sink,
                         std::make_shared<no_job_metrics>(), rebuild);
  }

  void TearDown() override {
    caf::anon_send_exit(manager, caf::exit_reason::user_shutdown);
    sys.reset();
  }

  // The manager's reply to `rq`, within 5 s.
  reply ask(job_request rq) {
    rq.id = request_id::of(next_id++);
    auto want = rq.id;
    caf::anon_send(manager, std::move(rq));
    auto until = std::chrono::steady_clock::now() + std::chrono::seconds{5};
    std::vector<reply_sink::outgoing> out;
    while (std::chrono::steady_clock::now() < until) {
      sink->drain(out);
      for (auto& o : out) {
        reply r;
        auto* data = reinterpret_cast<const uint8_t*>(o.body.data());
        if (!decode_reply(data, o.body.size(), codec_limits{}, r) &&
            r.id == want) {
          return r;
        }
      }
      out.clear();
      std::this_thread::sleep_for(std::chrono::milliseconds{5});
    }
    ADD_FAILURE() << "no reply from the job manager";
    return reply{};
  }

  job_request op(op_kind kind, const std::string& job) {
    job_request rq;
    rq.op = static_cast<uint8_t>(kind);
    rq.tenant = "t";
    rq.job = job;
    if (kind == op_kind::submit) {
      rq.infer.model = "echo";
      rq.infer.version = 1;
      rq.frame = "frame-of-" + job;
    }
    return rq;
  }

  // What the router says about job `job`'s request.
  void event(const std::string& job, job_event ev) {
    std::string key = "t";
    key += '\0';
    key += job;
    ev.id = request_id::of(key);
    caf::anon_send(manager, job_atom::value, std::move(ev));
  }

  // Runs `job` to 3 of 10 steps, then ends it with `code`.
  void run_and_end(const std::string& job, status code) {
    ASSERT_EQ(ask(op(op_kind::submit, job)).job.state, "queued");
    job_event p;
    p.kind = job_event_kind::progress;
    p.done = 3;
    p.total = 10;
    event(job, p);
    reply final_reply;
    final_reply.code = code;
    final_reply.error = code == status::ok ? "" : "boom";
    job_event f;
    f.kind = job_event_kind::finished;
    f.code = static_cast<uint8_t>(code);
    f.error = final_reply.error;
    encode_reply(final_reply, f.reply);
    event(job, f);
  }
};

} // namespace

TEST_F(store_fixture, insert_is_idempotent_per_tenant_and_id) {
  auto s = open_sqlite_job_store(cfg());
  ASSERT_TRUE(s) << reason_of(s.error());
  auto a = (*s)->insert(make_job("a"));
  ASSERT_TRUE(a);
  EXPECT_TRUE(a->second);
  auto again = (*s)->insert(make_job("a"));
  ASSERT_TRUE(again);
  EXPECT_FALSE(again->second);
  EXPECT_EQ(again->first.seq, a->first.seq);
  auto other = make_job("a");
  other.tenant = "u";
  EXPECT_TRUE((*s)->insert(other)->second) << "ids are per tenant";
}

TEST_F(store_fixture, first_outcome_wins_and_large_results_use_files) {
  auto s = open_sqlite_job_store(cfg());
  ASSERT_TRUE(s);
  ASSERT_TRUE((*s)->insert(make_job("a")));
  auto done = make_job("a");
  done.state = job_state::done;
  done.result = std::string(100, 'r'); // over max_result_bytes
  done.updated_ms = 2000;
  EXPECT_TRUE(*(*s)->finish(done));
  auto late = done;
  late.result = "late";
  EXPECT_FALSE(*(*s)->finish(late)) << "a second result replaced the first";
  auto got = (*s)->get("t", "a", true);
  ASSERT_TRUE(got && *got);
  EXPECT_EQ((*got)->state, job_state::done);
  EXPECT_EQ((*got)->result, std::string(100, 'r'));
  EXPECT_EQ((*got)->request, "frame-of-a");
  EXPECT_EQ(*(*s)->expire(3000), 1u);
  EXPECT_FALSE(*(*s)->get("t", "a", true));
  EXPECT_TRUE(std::filesystem::is_empty(dir.path() + "/jobs.db.results"));
}

TEST_F(store_fixture, open_jobs_by_priority_and_survive_reopening) {
  {
    auto s = open_sqlite_job_store(cfg());
    ASSERT_TRUE(s);
    (*s)->insert(make_job("low", 9));
    (*s)->insert(make_job("high", 0));
    (*s)->insert(make_job("mid", 5));
    (*s)->set_progress({{"t", "mid", 3, 10, 1500}});
  }
  auto s = open_sqlite_job_store(cfg());
  ASSERT_TRUE(s);
  auto open = (*s)->open_jobs();
  ASSERT_TRUE(open);
  ASSERT_EQ(open->size(), 3u);
  EXPECT_EQ((*open)[0].id, "high");
  EXPECT_EQ((*open)[1].id, "mid");
  EXPECT_EQ((*open)[1].state, job_state::running);
  EXPECT_EQ((*open)[1].done, 3u);
  EXPECT_EQ((*open)[2].request, "frame-of-low");
  auto page = (*s)->list("t", 2, "");
  ASSERT_TRUE(page);
  ASSERT_EQ(page->size(), 2u);
  EXPECT_EQ((*page)[0].id, "mid"); // newest first
  auto next = (*s)->list("t", 2, (*page)[1].id);
  ASSERT_EQ(next->size(), 1u);
  EXPECT_EQ((*next)[0].id, "low");
}

TEST_F(store_fixture, a_damaged_file_is_refused_by_name) {
  auto c = cfg();
  {
    std::ofstream f{c.path};
    f << std::string(8192, 'x');
  }
  auto s = open_sqlite_job_store(c);
  ASSERT_FALSE(s);
  EXPECT_NE(reason_of(s.error()).find(c.path), std::string::npos)
      << reason_of(s.error());
}

TEST(job_codec, job_ops_and_frames_round_trip) {
  request r;
  r.op = op_kind::wait;
  r.id = request_id::of(uint64_t{2});
  r.job = "report-7";
  r.timeout_ms = 60000;
  r.progress = true;
  std::string bytes;
  encode_request(r, bytes);
  request back;
  ASSERT_FALSE(decode_request(reinterpret_cast<const uint8_t*>(bytes.data()),
                              bytes.size(), codec_limits{}, back));
  EXPECT_EQ(back.op, op_kind::wait);
  EXPECT_EQ(back.job, "report-7");
  EXPECT_TRUE(back.progress);
  reply p;
  p.id = r.id;
  p.job.job = "report-7";
  p.job.has_progress = true;
  p.job.done = 3;
  p.job.total = 20;
  p.event = "progress";
  std::string frame;
  encode_reply(p, frame);
  // The 69 bytes docs/protocol.md shows for this frame.
  EXPECT_EQ(frame.size(), 69u);
  reply q;
  ASSERT_FALSE(decode_reply(reinterpret_cast<const uint8_t*>(frame.data()),
                            frame.size(), codec_limits{}, q));
  EXPECT_EQ(q.event, "progress");
  EXPECT_EQ(q.job.done, 3u);
  EXPECT_EQ(q.job.total, 20u);
  EXPECT_EQ(q.job.job, "report-7");
  request bad;
  std::string wait_without_job;
  request w;
  w.op = op_kind::wait;
  encode_request(w, wait_without_job);
  auto err =
      decode_request(reinterpret_cast<const uint8_t*>(wait_without_job.data()),
                     wait_without_job.size(), codec_limits{}, bad);
  EXPECT_EQ(reason_of(err), "job: required for op wait");
}

TEST_F(manager_fixture, a_failed_job_keeps_the_progress_it_reached) {
  run_and_end("fails", status::internal);
  auto j = ask(op(op_kind::job, "fails"));
  EXPECT_EQ(j.job.state, "failed");
  EXPECT_EQ(j.code, status::internal);
  EXPECT_EQ(j.job.done, 3u) << "a failure after 3 of 10 steps shows 10";
  EXPECT_EQ(j.job.total, 10u);
  // A job that is done did every step, whatever its last progress said.
  run_and_end("works", status::ok);
  j = ask(op(op_kind::job, "works"));
  EXPECT_EQ(j.job.state, "done");
  EXPECT_EQ(j.job.done, 10u);
  // The list shows the same.
  auto list = ask(op(op_kind::jobs, ""));
  ASSERT_EQ(list.jobs.size(), 2u);
  EXPECT_EQ(list.jobs[1].job, "fails");
  EXPECT_EQ(list.jobs[1].done, 3u);
}

TEST_F(manager_fixture, a_page_after_an_unknown_job_is_not_found) {
  for (auto* id : {"a", "b", "c"}) {
    ASSERT_EQ(ask(op(op_kind::submit, id)).job.state, "queued");
  }
  auto list = op(op_kind::jobs, "");
  list.limit = 2;
  auto first = ask(list);
  ASSERT_EQ(first.jobs.size(), 2u);
  EXPECT_EQ(first.jobs[0].job, "c");
  list.after = first.jobs[1].job;
  auto second = ask(list);
  ASSERT_EQ(second.jobs.size(), 1u);
  EXPECT_EQ(second.jobs[0].job, "a");
  // An unknown `after` would page from the top again: a client that pages
  // until the list runs out would never stop.
  list.after = "no-such-job";
  auto bad = ask(list);
  EXPECT_EQ(bad.code, status::not_found);
  EXPECT_NE(bad.error.find("after: no job no-such-job"), std::string::npos)
      << bad.error;
  EXPECT_TRUE(bad.jobs.empty());
}
