#!/bin/bash
# The whole test suite: install what is needed, build with warnings as errors, run every
# unit and integration test (CTest), the unit tests again under ASan+UBSan, and check
# clang-format.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
scripts/install-deps.sh
scripts/build.sh
echo "== clang-format"
files=$(git ls-files '*.cpp' '*.hpp' 2>/dev/null || find src tests -name '*.[ch]pp')
clang-format --dry-run --Werror $files
echo "== unit tests under ASan+UBSan"
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DRACKER_SANITIZE=ON -DRACKER_WERROR=ON >/dev/null
cmake --build build-asan -j"$(nproc)" --target unit_base unit_oci unit_runtime unit_image unit_engine \
  unit_probe
(cd build-asan && ctest --output-on-failure -R '^(base|oci|runtime|image|engine|probe)\.' -j2)
echo "== fuzz targets (20 s each)"
tests/fuzz/run.sh 20
echo "== all tests"
cd build && ctest --output-on-failure
