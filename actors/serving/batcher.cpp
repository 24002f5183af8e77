#include "actors/serving/batcher.hpp"

#include <cstring>

namespace shoal {

batcher::batcher(uint32_t max_batch, std::chrono::microseconds max_delay)
    : max_batch_(max_batch == 0 ? 1 : max_batch), max_delay_(max_delay) {
  // nop
}

void batcher::push(exec_item item, time_point now) {
  queued_rows_ += item.rows;
  queue_.emplace_back(std::move(item), now);
}

bool batcher::ready(time_point now) const noexcept {
  if (queue_.empty()) {
    return false;
  }
  if (queued_rows_ >= max_batch_) {
    return true;
  }
  return now - queue_.front().second >= max_delay_;
}

std::chrono::microseconds
batcher::time_to_ready(time_point now) const noexcept {
  if (queue_.empty() || ready(now)) {
    return std::chrono::microseconds{0};
  }
  return std::chrono::duration_cast<std::chrono::microseconds>(
      queue_.front().second + max_delay_ - now);
}

std::vector<exec_item> batcher::take() {
  std::vector<exec_item> out;
  taken_arrivals_.clear();
  uint64_t rows = 0;
  while (!queue_.empty()) {
    auto& front = queue_.front();
    if (!out.empty() && rows + front.first.rows > max_batch_) {
      break;
    }
    rows += front.first.rows;
    queued_rows_ -= front.first.rows;
    taken_arrivals_.push_back(front.second);
    out.push_back(std::move(front.first));
    queue_.pop_front();
  }
  return out;
}

std::vector<tensor> concat_inputs(std::vector<exec_item>& items,
                                  uint64_t& rows) {
  rows = 0;
  for (auto& item : items) {
    rows += item.rows;
  }
  if (items.size() == 1) {
    return std::move(items.front().inputs);
  }
  std::vector<tensor> out;
  auto& first = items.front().inputs;
  out.reserve(first.size());
  for (size_t i = 0; i < first.size(); ++i) {
    tensor t;
    t.name = first[i].name;
    t.type = first[i].type;
    t.shape = first[i].shape;
    if (!t.shape.empty()) {
      t.shape[0] = rows;
    }
    size_t total = 0;
    for (auto& item : items) {
      total += item.inputs[i].data.size();
    }
    t.data.resize(total);
    size_t pos = 0;
    for (auto& item : items) {
      auto& src = item.inputs[i].data;
      if (!src.empty()) {
        std::memcpy(t.data.data() + pos, src.data(), src.size());
      }
      pos += src.size();
    }
    out.push_back(std::move(t));
  }
  return out;
}

std::vector<std::vector<tensor>>
split_outputs(std::vector<tensor>& outputs,
              const std::vector<exec_item>& items) {
  std::vector<std::vector<tensor>> out(items.size());
  if (items.size() == 1) {
    out.front() = std::move(outputs);
    return out;
  }
  uint64_t total_rows = 0;
  for (auto& item : items) {
    total_rows += item.rows;
  }
  for (auto& t : outputs) {
    auto row_bytes = total_rows ? t.data.size() / total_rows : 0;
    size_t pos = 0;
    for (size_t k = 0; k < items.size(); ++k) {
      tensor part;
      part.name = t.name;
      part.type = t.type;
      part.shape = t.shape;
      if (!part.shape.empty()) {
        part.shape[0] = items[k].rows;
      }
      auto n = row_bytes * items[k].rows;
      part.data.assign(t.data.begin() + pos, t.data.begin() + pos + n);
      pos += n;
      out[k].push_back(std::move(part));
    }
  }
  return out;
}

} // namespace shoal
