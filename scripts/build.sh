#!/bin/bash
# Configures and builds racker into build/ (warnings are errors).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cmake -S "$top" -B "$top/build" -DCMAKE_BUILD_TYPE=Release -DRACKER_WERROR=ON >/dev/null
cmake --build "$top/build" -j"$(nproc)"
