#!/usr/bin/env bash
# CI's performance guard (issue 21): instructions per DHCP exchange, per new
# machine's render and per cached render, counted by callgrind on the dev
# build CI has already made (bench/callgrind.sh), against bench/budget.txt.
# Instruction counts do not depend on the machine's load, so the guard cannot
# flap on a busy CI host as a timing would; it catches a hot path that starts
# doing much more work (an extra render, a scan per packet), not a few percent.
# Fails when a workload exceeds its budget by more than MARGIN percent.
#
#   bench/guard.sh            # MARGIN=25, BUDGET=bench/budget.txt
# Needs: valgrind. About 40 s.
set -euo pipefail
cd "$(dirname "$0")/.."
margin=${MARGIN:-25}
budget=${BUDGET:-bench/budget.txt}
counts=$(PROFILE=dev N1=20 N2=120 bench/callgrind.sh | tail -n +2)
status=0
while read -r workload limit; do
    case $workload in ''|'#'*) continue ;; esac
    got=$(awk -v w="$workload" '$1 == w {print $2}' <<<"$counts")
    if [ -z "$got" ]; then
        echo "guard: no count for workload '$workload' (bench/callgrind.sh)" >&2
        status=1
        continue
    fi
    pct=$(( (got - limit) * 100 / limit ))
    if [ "$got" -gt $(( limit + limit * margin / 100 )) ]; then
        printf 'guard: %-7s %10d instructions/iteration, budget %d: %+d%% (over the %d%% margin)\n' "$workload" "$got" "$limit" "$pct" "$margin" >&2
        status=1
    else
        printf 'guard: %-7s %10d instructions/iteration, budget %d: %+d%%\n' "$workload" "$got" "$limit" "$pct"
    fi
done < "$budget"
[ "$status" = 0 ] || echo "guard: a hot path got costlier; if that is intended, measure and update $budget (see its header)" >&2
exit "$status"
