#!/usr/bin/env bash
# Copies bench/results/latest.md into README.md between the bench markers.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 - <<'PY'
import re
readme = open("README.md").read()
table = open("bench/results/latest.md").read().strip()
block = "<!-- bench:begin -->\n" + table + "\n<!-- bench:end -->"
if "BENCH_TABLE" in readme:
    readme = readme.replace("BENCH_TABLE", block)
else:
    readme = re.sub(r"<!-- bench:begin -->.*?<!-- bench:end -->", lambda m: block, readme, flags=re.S)
open("README.md", "w").write(readme)
PY
