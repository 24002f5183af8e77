// Spot notices: what counts as one, and the watcher's file trigger.
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <future>

#include <gtest/gtest.h>

#include "runtime/node/preemption.hpp"

using namespace shoal;
using namespace std::chrono_literals;

TEST(preemption, only_a_200_that_does_not_say_false_is_a_notice) {
  EXPECT_TRUE(is_preemption_notice(200, R"({"action": "terminate"})"));
  EXPECT_TRUE(is_preemption_notice(200, "TRUE\n"));
  EXPECT_TRUE(is_preemption_notice(200, ""));
  EXPECT_FALSE(is_preemption_notice(200, "FALSE")) << "GCP's answer until then";
  EXPECT_FALSE(is_preemption_notice(200, " false\n"));
  EXPECT_FALSE(is_preemption_notice(404, "not found")) << "AWS's until then";
  EXPECT_FALSE(is_preemption_notice(0, "")) << "no answer at all";
  EXPECT_FALSE(is_preemption_notice(500, "oops"));
}

TEST(preemption, nothing_configured_starts_nothing) {
  EXPECT_EQ(preemption_watcher::start({}, [](const std::string&) {}), nullptr);
}

TEST(preemption, a_file_that_appears_is_reported_once) {
  auto path = std::filesystem::temp_directory_path() /
              ("shoal-notice-" + std::to_string(::getpid()));
  std::filesystem::remove(path);
  std::promise<std::string> seen;
  int calls = 0;
  auto w = preemption_watcher::start({"", path.string(), 100ms},
                                     [&](const std::string& from) {
                                       ++calls;
                                       seen.set_value(from);
                                     });
  ASSERT_NE(w, nullptr);
  auto fut = seen.get_future();
  EXPECT_EQ(fut.wait_for(300ms), std::future_status::timeout)
      << "no file, no notice";
  std::fclose(std::fopen(path.c_str(), "w"));
  ASSERT_EQ(fut.wait_for(5s), std::future_status::ready);
  EXPECT_EQ(fut.get(), path.string());
  std::this_thread::sleep_for(300ms);
  w.reset();
  EXPECT_EQ(calls, 1);
  std::filesystem::remove(path);
}
