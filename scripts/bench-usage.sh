#!/usr/bin/env bash
# The usage explorer at scale: a fresh SQLite database filled with 1,000,000
# ledger rows (200 owners: 150 clients and 50 users, 10 models, spread evenly
# over the last 90 days) and their daily roll-up, then the rendered /usage
# page (server-side HTML, signed in as an admin) and the usage_report server
# function, timed one request at a time next to /healthz from the same run.
# Prints a Markdown table. scripts/bench.sh runs it as its last step; alone:
#   cargo build --release -p server --bin tollgate && scripts/bench-usage.sh [REQUESTS]
set -euo pipefail
cd "$(dirname "$0")/.."
n="${1:-100}"
tg=./target/release/tollgate
addr="${BENCH_USAGE_ADDR:-127.0.0.1:18090}"
work=$(mktemp -d)
pid=""
cleanup() { [ -z "$pid" ] || kill "$pid" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

cat > "$work/tollgate.yaml" <<'YAML'
models:
  model-0: { provider: dummy, price: { input: 1, output: 2 } }
YAML
db="$work/usage.db"
url="sqlite://$db"
$tg init-db --config "$work/tollgate.yaml" --database-url "$url" 2>/dev/null
TOLLGATE_ADMIN_PASSWORD=bench-password-1 $tg create-admin bench --config "$work/tollgate.yaml" --database-url "$url" 2>/dev/null

fill_started=$(date +%s%N)
sqlite3 "$db" <<'SQL'
BEGIN;
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 150)
INSERT INTO clients (id, name, created_by, created_at) SELECT 1000 + i, printf('client-%03d', i), NULL, 0 FROM n;
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 50)
INSERT INTO users (id, username, password_hash, role, active, created_at) SELECT 1000 + i, printf('user-%03d', i), 'x', 'user', 1, 0 FROM n;
INSERT INTO pools (id, owner_kind, owner_id, max_micro, unlimited, refresh_micro, balance_micro, refilled_at, updated_at, held_micro)
  SELECT id, 'client', id, 0, 1, 0, 0, 0, 0, 0 FROM clients WHERE id > 1000;
INSERT INTO pools (id, owner_kind, owner_id, max_micro, unlimited, refresh_micro, balance_micro, refilled_at, updated_at, held_micro)
  SELECT 150 + id, 'user', id, 0, 1, 0, 0, 0, 0, 0 FROM users WHERE id > 1000;
-- One row every 7.776 s over 90 days; owners and models interleaved so
-- every (day, owner, model) group exists: 180,000 roll-up rows.
WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 999999)
INSERT INTO ledger (pool_id, key_id, model, tokens_in, tokens_out, coins_micro, created_at, request_id, outcome, cost_micro, overage_micro, code)
SELECT 1001 + i % 200, NULL, 'model-' || ((i / 200) % 10), 100 + i % 900, 10 + i % 90,
       CASE WHEN i % 50 = 0 THEN 0 ELSE 1000 + (i * 37) % 5000 END,
       (CAST(strftime('%s', 'now') AS INTEGER) - 90 * 86400) * 1000 + i * 7776,
       'bench-' || i, '', CASE WHEN i % 50 = 0 THEN 0 ELSE 1000 + (i * 37) % 5000 END, 0,
       CASE WHEN i % 50 = 0 THEN 'refused' ELSE 'ok' END
FROM n;
-- The roll-up, as the migration builds it from an existing ledger.
INSERT INTO usage_daily (day, owner_kind, owner_id, model, calls, refused, tokens_in, tokens_out, coins_micro)
SELECT l.created_at / 86400000, p.owner_kind, p.owner_id, l.model, COUNT(*),
       SUM(CASE WHEN l.code = 'refused' THEN 1 ELSE 0 END), SUM(l.tokens_in), SUM(l.tokens_out), SUM(l.coins_micro)
FROM ledger l JOIN pools p ON p.id = l.pool_id
GROUP BY l.created_at / 86400000, p.owner_kind, p.owner_id, l.model;
COMMIT;
SQL
fill_ms=$(( ($(date +%s%N) - fill_started) / 1000000 ))
ledger_rows=$(sqlite3 "$db" 'SELECT COUNT(*) FROM ledger')
rollup_rows=$(sqlite3 "$db" 'SELECT COUNT(*) FROM usage_daily')

TOLLGATE_LOG=warn $tg serve --config "$work/tollgate.yaml" --database-url "$url" --listen "$addr" 2>"$work/serve.log" &
pid=$!
for _ in $(seq 1 100); do curl -fs "http://$addr/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
cookie=$(curl -s -o /dev/null -D - -H "Accept: application/json" -H "Origin: http://$addr" \
  --data-urlencode username=bench --data-urlencode password=bench-password-1 \
  "http://$addr/api/login" | awk -F'[ ;]' 'tolower($1) == "set-cookie:" {print $2}')
[ -n "$cookie" ] || { echo "bench-usage: could not sign in: $(cat "$work/serve.log")" >&2; exit 1; }

times() { # label, then curl arguments: n timings in seconds, one per line, to $work/label
  local label=$1; shift
  for _ in $(seq 1 "$n"); do curl -s -o "$work/last" -w '%{time_total}\n' "$@"; done > "$work/$label"
}
from90=$(date -u -d '89 days ago' +%F)
to=$(date -u +%F)
times healthz "http://$addr/healthz"
times page -H "Cookie: $cookie" "http://$addr/usage"
grep -q 'data-testid="top-spenders"' "$work/last" || echo "warning: /usage showed no top spenders: $(head -c 300 "$work/last")" >&2
times page90 -H "Cookie: $cookie" "http://$addr/usage?from=$from90&to=$to&group=model"
times api -H "Cookie: $cookie" -H "Origin: http://$addr" -H "Accept: application/json" \
  --data "from=&to=&group=client" "http://$addr/api/usage_report"
grep -q '"top"' "$work/last" || echo "warning: usage_report answered: $(head -c 300 "$work/last")" >&2
times healthz2 "http://$addr/healthz"

python3 - "$work" "$n" "$ledger_rows" "$rollup_rows" "$fill_ms" <<'PY'
import sys
work, n, ledger, rollup, fill = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]) / 1000
def ms(label):
    v = sorted(float(x) * 1000 for x in open(f"{work}/{label}") if x.strip())
    return v[len(v) // 2], v[min(len(v) - 1, int(len(v) * 0.99))]
h50 = min(ms("healthz")[0], ms("healthz2")[0])
print(f"## Usage explorer ({ledger:,} ledger rows, {rollup:,} roll-up rows, {n} sequential requests each)\n")
print(f"Filling the database took {fill:.1f} s (sqlite3, one recursive CTE, and the roll-up built by GROUP BY).\n")
print("| request | p50 | p99 | p50 / healthz p50 |")
print("|---|---|---|---|")
for label, what in [("healthz", "GET /healthz (before)"),
                    ("page", "GET /usage, admin, default range (30 days, by client), rendered HTML"),
                    ("page90", "GET /usage, admin, 90 days by model, rendered HTML"),
                    ("api", "POST /api/usage_report, admin, default range (JSON)"),
                    ("healthz2", "GET /healthz (after)")]:
    p50, p99 = ms(label)
    print(f"| {what} | {p50:.2f} ms | {p99:.2f} ms | {p50 / h50:.1f}x |")
PY
