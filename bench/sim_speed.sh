#!/usr/bin/env bash
# How fast does the simulator run? For each scenario, times
#   fanout-sim run --seeds 0..N --scenario S [--jobs J]
# and prints seeds/s (seed×scenario runs per wall-clock second) per scenario and in total.
# A timing is a benchmark, not a test: numbers depend on the machine and its load.
#
#   bench/sim_speed.sh                 # 20 seeds of every scenario, --jobs left to its default
#   SIM_SPEED_SEEDS=0..100 SIM_SPEED_JOBS=1 bench/sim_speed.sh
#   SIM_SPEED_SCENARIOS="churn duplex-never-reads" bench/sim_speed.sh
#
# Knobs: SIM_SPEED_SEEDS (0..20), SIM_SPEED_JOBS (unset: the binary's default; set it to 1 for
# one core), SIM_SPEED_SCENARIOS (every scenario `fanout-sim list` prints), SIM_SPEED_BIN (build
# target/release/fanout-sim and use it).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

SEEDS=${SIM_SPEED_SEEDS:-0..20}
BIN=${SIM_SPEED_BIN:-}
if [[ -z "$BIN" ]]; then
  cargo build --release -q -p fanout-sim
  BIN="${CARGO_TARGET_DIR:-target}/release/fanout-sim"
fi
JOBS=()
if [[ -n "${SIM_SPEED_JOBS:-}" ]]; then JOBS=(--jobs "$SIM_SPEED_JOBS"); fi
read -r -a SCENARIOS <<<"${SIM_SPEED_SCENARIOS:-$("$BIN" list | tr '\n' ' ')}"
N=$(( ${SEEDS#*..} - ${SEEDS%..*} ))

printf '%-26s %8s %9s %8s\n' scenario seeds seconds seeds/s
total_runs=0
total_ns=0
status=0
for s in "${SCENARIOS[@]}"; do
  start=$(date +%s%N)
  if ! "$BIN" run --seeds "$SEEDS" --scenario "$s" "${JOBS[@]}" >/dev/null; then
    status=1
    s="$s (failures)"
  fi
  ns=$(( $(date +%s%N) - start ))
  total_runs=$(( total_runs + N ))
  total_ns=$(( total_ns + ns ))
  awk -v s="$s" -v n="$N" -v ns="$ns" \
    'BEGIN { printf "%-26s %8d %9.1f %8.2f\n", s, n, ns / 1e9, n / (ns / 1e9) }'
done
awk -v n="$total_runs" -v ns="$total_ns" \
  'BEGIN { printf "%-26s %8d %9.1f %8.2f\n", "all", n, ns / 1e9, n / (ns / 1e9) }'
exit "$status"
