// postroj matrix: probes of several images at once, as data. A matrix file names images (catalog
// labels) and probes (packages to install, units and URLs to check); every image meets every
// probe, each pair a cell. --shard I/N keeps the cells whose index is I-1 modulo N, so N CI
// machines running shards 1/N … N/N together run each cell exactly once.
//
//   {"images": ["debian-bookworm", "debian-trixie"],
//    "probes": [{"name": "webfs", "packages": ["webfs_1.21.deb"], "units": ["webfs"],
//                "network": ["http://localhost:8000"], "http_status": "2xx,3xx",
//                "timeout": 60, "network_timeout": 30},
//               {"name": "journald", "units": ["systemd-journald"]}]}
#pragma once

#include <string>
#include <utility>
#include <vector>

namespace racker::probe {

struct MatrixProbe {
  std::string name;
  std::vector<std::string> packages;  // paths (relative ones from the matrix file's directory)
  std::vector<std::string> units;
  std::vector<std::string> network;
  std::string http_status;  // "" = any answer
  int timeout_s = 60;
  int network_timeout_s = 30;
};

struct Matrix {
  std::vector<std::string> images;
  std::vector<MatrixProbe> probes;
};

struct MatrixCell {
  size_t index = 0;  // image-major: images[index / probes] x probes[index % probes]
  std::string image;
  MatrixProbe probe;
};

// Parses a matrix document; errors name origin and the field ("m.json: probes[1]: ...").
// Relative package paths are made absolute against base_dir.
Matrix parse_matrix(const std::string& text, const std::string& origin,
                    const std::string& base_dir);

// "I/N" with 1 <= I <= N -> {I, N}; throws racker::Error (EINVAL) otherwise.
std::pair<int, int> parse_shard(const std::string& text);

// The cells of shard i of n (1-based), in index order.
std::vector<MatrixCell> matrix_cells(const Matrix& m, int shard_i = 1, int shard_n = 1);

}  // namespace racker::probe
