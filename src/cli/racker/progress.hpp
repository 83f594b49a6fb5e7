#pragma once

#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "image/puller.hpp"

namespace racker::cli {

// Renders pull events like `docker pull`: per-layer bars with bytes, rate and ETA on a
// terminal (redrawn in place), plain lines otherwise, nothing at all when quiet.
class PullProgress {
 public:
  enum class Mode { tty, plain, quiet };
  explicit PullProgress(Mode mode);
  void on_event(const image::PullEvent& e);  // thread-safe

 private:
  struct Row {
    std::string id;
    std::string status;
    uint64_t current = 0, total = 0;
    double started = 0;
  };
  void redraw();
  Mode mode_;
  std::mutex mu_;
  std::vector<Row> rows_;
  size_t drawn_ = 0;
  double last_draw_ = 0;
};

}  // namespace racker::cli
