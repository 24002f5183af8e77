// The SQLite job store (runtime/jobs/sqlite_job_store.hpp) and the wire
// encoding of the job ops: what the job manager relies on.
#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

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
