#!/usr/bin/env bash
# Trains the study's 36 runs as it was trained: two lanes (one per core), one thread each, the sweep's
# runs dealt alternately to the lanes in sweep order. Run from the repository root with matcher on the PATH.
# Finished runs are skipped and partial ones resume, so rerunning it is safe.
set -euo pipefail
study=results/studies/tiny-lr
names=$(grep '^- name:' "$study/tiny-lr.yaml" | awk '{print $3}')
lane1=$(echo "$names" | awk 'NR % 2 == 1' | paste -sd, -)
lane2=$(echo "$names" | awk 'NR % 2 == 0' | paste -sd, -)
start=$(date +%s)
OMP_NUM_THREADS=1 matcher run "$study/tiny-lr.yaml" --results "$study" --only "$lane1" > "$study/train-lane1.log" 2>&1 &
OMP_NUM_THREADS=1 matcher run "$study/tiny-lr.yaml" --results "$study" --only "$lane2" > "$study/train-lane2.log" 2>&1 &
wait
echo "trained in $(( $(date +%s) - start )) s"
