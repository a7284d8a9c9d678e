#!/usr/bin/env bash
# Test-time depth of the grid points `matcher compare --select val_loss` selects (named here; every seed): 512 held-out problems at depths 2, 4 (trained),
# 8 and 16 for dr and dr_da; la at its trained depth on the same 512 problems. Run from the repository root.
set -euo pipefail
runs=results/studies/tiny-lr/tiny-lr
for seed in 0 1 2; do
  matcher eval "$runs/dr-lr2e-3-s$seed" --task embedded,n=512 --depth 2,4,8,16 --device cpu
  matcher eval "$runs/dr_da-lr4e-3-s$seed" --task embedded,n=512 --depth 2,4,8,16 --device cpu
  matcher eval "$runs/la-tiny-lr2e-3-s$seed" --task embedded,n=512 --device cpu
done
