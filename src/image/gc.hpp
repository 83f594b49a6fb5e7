// The store's one garbage collector, and leases: what work in flight (a pull, an import, a
// container being set up) uses before any image record names it. containerd's leases are the
// model.
//   <root>/leases/lock        held by the collector for a whole pass, and briefly by every
//                             Lease::add: a lease entry is either seen by a pass or added after
//                             it (and then finds the blob or layer gone and makes it again)
//   <root>/leases/<id>.lease  one per lease: a line per blob digest or layer chain id; its
//                             holder keeps an flock on it, so one whose holder died (kill -9)
//                             is recognised and removed by the next pass
#pragma once

#include <set>
#include <string>
#include <vector>

#include "base/fd.hpp"

namespace racker::image {

class ContentStore;
class ImageStore;

class Lease {
 public:
  explicit Lease(const std::string& store_root);
  ~Lease();
  Lease(const Lease&) = delete;
  Lease& operator=(const Lease&) = delete;

  // Protects these blob digests and layer chain ids from every collection from now on until
  // the lease ends. Call before looking whether the store has them.
  void add(const std::vector<std::string>& refs);

 private:
  std::string root_;
  std::string path_;
  UniqueFd fd_;
};

// Removes the layers and blobs that no image record and no live lease refers to; with only,
// just those among them (an import taking back what it added). Removes leases whose holders
// died. Throws racker::Error.
void collect_garbage(ContentStore& content, ImageStore& images,
                     const std::set<std::string>* only = nullptr);

}  // namespace racker::image
