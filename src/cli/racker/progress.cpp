#include "cli/racker/progress.hpp"

#include <time.h>

#include <cstdio>

namespace racker::cli {
namespace {

double now() {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
}

std::string human(double bytes) {
  const char* units[] = {"B", "kB", "MB", "GB"};
  int u = 0;
  while (bytes >= 1000 && u < 3) {
    bytes /= 1000;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, u == 0 ? "%.0f%s" : "%.1f%s", bytes, units[u]);
  return buf;
}

}  // namespace

PullProgress::PullProgress(Mode mode) : mode_(mode) {}

void PullProgress::on_event(const image::PullEvent& e) {
  std::lock_guard<std::mutex> g(mu_);
  if (mode_ == Mode::quiet) return;
  using K = image::PullEvent;
  if (e.kind == K::resolved) {
    std::printf("%s: resolved to %s\n", e.id.c_str(), e.text.c_str());
    std::fflush(stdout);
    return;
  }
  if (e.kind == K::done) {
    if (mode_ == Mode::tty) redraw();
    std::printf("Digest: %s\nStatus: downloaded %s\n", e.text.c_str(), e.id.c_str());
    std::fflush(stdout);
    return;
  }
  Row* row = nullptr;
  for (auto& r : rows_)
    if (r.id == e.id) row = &r;
  if (!row) {
    rows_.push_back({e.id, "", 0, e.total, now()});
    row = &rows_.back();
  }
  std::string old = row->status;
  row->current = e.current;
  row->total = e.total;
  switch (e.kind) {
    case K::layer_waiting:
      row->status = "Waiting";
      break;
    case K::layer_exists:
      row->status = "Already exists";
      break;
    case K::layer_progress:
      row->status = "Downloading";
      break;
    case K::layer_verifying:
      row->status = "Verifying";
      break;
    case K::layer_extracting:
      row->status = "Extracting";
      break;
    case K::layer_done:
      row->status = "Pull complete";
      break;
    default:
      break;
  }
  if (mode_ == Mode::plain) {
    if (row->status != old) {
      std::printf("%s: %s\n", row->id.c_str(), row->status.c_str());
      std::fflush(stdout);
    }
    return;
  }
  double t = now();
  if (row->status != old || t - last_draw_ > 0.1) redraw();
}

void PullProgress::redraw() {
  last_draw_ = now();
  std::string out;
  if (drawn_ > 0) out += "\x1b[" + std::to_string(drawn_) + "A";
  for (auto& r : rows_) {
    std::string line = r.id + ": " + r.status;
    if (r.status == "Downloading" && r.total > 0) {
      int width = 30;
      int fill =
          static_cast<int>(static_cast<double>(r.current) * width / static_cast<double>(r.total));
      if (fill > width) fill = width;
      double elapsed = now() - r.started;
      double rate = elapsed > 0 ? static_cast<double>(r.current) / elapsed : 0;
      double eta =
          rate > 0 ? static_cast<double>(r.total - std::min(r.current, r.total)) / rate : 0;
      char buf[128];
      std::snprintf(buf, sizeof buf, " [%s>%s] %s/%s %s/s ETA %.0fs",
                    std::string(static_cast<size_t>(fill), '=').c_str(),
                    std::string(static_cast<size_t>(width - fill), ' ').c_str(),
                    human(static_cast<double>(r.current)).c_str(),
                    human(static_cast<double>(r.total)).c_str(), human(rate).c_str(), eta);
      line += buf;
    }
    out += "\x1b[2K" + line + "\n";
  }
  drawn_ = rows_.size();
  std::fwrite(out.data(), 1, out.size(), stdout);
  std::fflush(stdout);
}

}  // namespace racker::cli
