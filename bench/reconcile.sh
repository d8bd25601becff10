#!/usr/bin/env bash
# The reconciliation benchmark: the payment provider's report of every completed payment and refund
# of the workload day (one line per transaction), imported and matched by `settle reconcile`, against
# a pandas merge of the same two files on reference + amount; and the group rule's subset search on
# 1,000 bank debits against 50,000 payouts (`bench/src/bin/recon_groups.rs`). Prints numbers.
#
# Sourced by bench/run.sh (which has built, generated and imported); run on its own it does that
# first at BENCH_TRANSACTIONS (default 100000): ./bench/reconcile.sh
set -euo pipefail

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    cd "$(dirname "${BASH_SOURCE[0]}")/.."
    TRANSACTIONS=${BENCH_TRANSACTIONS:-100000}
    MERCHANTS=${BENCH_MERCHANTS:-5000}
    RUNS=${BENCH_RUNS:-3}
    DATE=2026-10-15
    WORK=target/bench-work-reconcile
    BENCH_VENV=.tools/bench-venv
    SETTLE=target/release/settle
    now() { date +%s.%N; }
    elapsed() { echo "$(now) - $1" | bc -l; }
    median() { sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
    step() { printf '\n==> %s\n' "$*" >&2; }
    "$BENCH_VENV/bin/python" -c 'import pandas' 2>/dev/null || {
        echo "pandas is needed in $BENCH_VENV: run ./bench/run.sh once (it installs it)" >&2
        exit 1
    }
    cargo build --release --locked -p settle -p settle-bench
    rm -rf "$WORK" && mkdir -p "$WORK"
    CSV="$WORK/transactions.csv"
    target/release/workload "$DATE" "$TRANSACTIONS" "$MERCHANTS" >"$CSV"
    "$SETTLE" --data-dir "$WORK/imported" import "$CSV" >/dev/null
    STANDALONE=1
fi

step "reconciliation: settle reconcile import + run vs a pandas merge ($RUNS runs each)"
REPORT="$WORK/provider-report.csv"
# The provider's report: what it captured and refunded, the fee it charged (1.5 % of a capture).
"$BENCH_VENV/bin/python" - "$CSV" "$REPORT" <<'PY'
import csv, sys
with open(sys.argv[1], newline="") as source, open(sys.argv[2], "w", newline="") as out:
    writer = csv.writer(out)
    writer.writerow(["reference", "amount", "currency", "fee", "status", "booked_at"])
    for row in csv.DictReader(source):
        if row["status"] != "completed" or row["kind"] not in ("payment", "refund"):
            continue
        units, _, cents = row["amount"].partition(".")
        minor = int(units) * 100 + int(cents.ljust(2, "0"))
        if row["kind"] == "payment":
            fee = (minor * 15 + 500) // 1000
            writer.writerow([row["external_ref"], row["amount"], row["currency"],
                             f"{fee // 100}.{fee % 100:02d}", "captured", row["occurred_at"]])
        else:
            writer.writerow([row["external_ref"], "-" + row["amount"], row["currency"], "0.00",
                             "refunded", row["occurred_at"]])
PY
report_lines=$(($(wc -l <"$REPORT") - 1))
cat >"$WORK/pandas_reconcile.py" <<'PY'
import sys
import pandas as pd
ours = pd.read_csv(sys.argv[1], dtype={"amount": str, "refund_of": str})
ours = ours[(ours["status"] == "completed") & ours["kind"].isin(["payment", "refund"])]
parts = ours["amount"].str.partition(".")
minor = parts[0].astype("int64") * 100 + parts[2].str.ljust(2, "0").astype("int64")
ours = ours.assign(amount_minor=minor.where(ours["kind"] == "payment", -minor))
theirs = pd.read_csv(sys.argv[2], dtype={"amount": str, "fee": str})
negative = theirs["amount"].str.startswith("-")
parts = theirs["amount"].str.lstrip("-").str.partition(".")
minor = parts[0].astype("int64") * 100 + parts[2].str.ljust(2, "0").astype("int64")
theirs = theirs.assign(amount_minor=minor.where(~negative, -minor))
merged = ours[["external_ref", "currency", "amount_minor"]].merge(
    theirs[["reference", "currency", "amount_minor"]],
    left_on=["external_ref", "currency", "amount_minor"],
    right_on=["reference", "currency", "amount_minor"],
    how="outer", indicator=True)
counts = merged["_merge"].value_counts()
print(int(counts.get("both", 0)), int(counts.get("left_only", 0)), int(counts.get("right_only", 0)))
PY
recon_run=() recon_import=() pandas_recon=()
for run in $(seq "$RUNS"); do
    rm -rf "$WORK/recon" && cp -r "$WORK/imported" "$WORK/recon" && sync
    started=$(now)
    "$SETTLE" --data-dir "$WORK/recon" reconcile import "$REPORT" --kind provider >/dev/null
    recon_import+=("$(elapsed "$started")")
    "$SETTLE" --data-dir "$WORK/recon" reconcile run --kind provider >"$WORK/recon-run.txt"
    recon_run+=("$(elapsed "$started")")
    started=$(now)
    "$BENCH_VENV/bin/python" "$WORK/pandas_reconcile.py" "$CSV" "$REPORT" >"$WORK/pandas-recon.txt"
    pandas_recon+=("$(elapsed "$started")")
done
recon_s=$(printf '%s\n' "${recon_run[@]}" | median)
recon_import_s=$(printf '%s\n' "${recon_import[@]}" | median)
pandas_recon_s=$(printf '%s\n' "${pandas_recon[@]}" | median)
settle_matched=$(sed -n 's/^provider: \([0-9]*\) matched.*/\1/p' "$WORK/recon-run.txt")
read -r pandas_matched pandas_ours_only pandas_theirs_only <"$WORK/pandas-recon.txt"
if [ "$settle_matched" = "$pandas_matched" ] && [ "$pandas_ours_only" = 0 ] && [ "$pandas_theirs_only" = 0 ]; then
    recon_exact="exact: both matched all $settle_matched"
else
    recon_exact="**differ**: Settle matched $settle_matched, pandas $pandas_matched ($pandas_ours_only ours only, $pandas_theirs_only theirs only)"
fi

step "reconciliation: the group rule, 1,000 bank debits against 50,000 payouts ($RUNS runs)"
groups_out=()
for run in $(seq "$RUNS"); do
    groups_out+=("$(target/release/recon_groups 1000 50000)")
done
# "seconds matched peak_rss_mb", median by time.
read -r groups_s groups_matched groups_rss_mb < <(printf '%s\n' "${groups_out[@]}" | sort -g | sed -n "$(( (RUNS + 1) / 2 ))p")

if [ -n "${STANDALONE:-}" ]; then
    echo
    echo "provider report of $report_lines lines against the day's transactions:"
    echo "  settle reconcile import + run: $recon_s s (import $recon_import_s s); pandas merge: $pandas_recon_s s; $(echo "$pandas_recon_s / $recon_s" | bc -l | xargs printf '%.2f')× faster; $recon_exact"
    echo "group rule: 1,000 debits vs 50,000 payouts: $groups_s s, $groups_matched matched, peak RSS $groups_rss_mb MB"
fi
