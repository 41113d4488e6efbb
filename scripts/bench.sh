#!/usr/bin/env bash
# bench.sh: build thaw and run the benchmark (`make bench`). Everything runs
# on 127.0.0.1, stops by itself, and takes about two minutes. Results go to
# bench/results/latest.json and latest.md; extra arguments go to thawbench
# (e.g. -only burst,hold_capacity).
set -euo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}
"$GO" build -o bin/thaw ./cmd/thaw
exec "$GO" run ./bench/cmd/thawbench -thaw bin/thaw -out bench/results "$@"
