#!/usr/bin/env bash
# Measures Tollgate's overhead, throughput and memory in one run, on this
# machine, and prints a Markdown report. Everything runs on loopback:
#   - a fast mock upstream written in Rust (server/examples/mock_upstream.rs),
#   - `tollgate serve` (release build) on a fresh SQLite file, accounting on,
#   - oha (from crates.io) as the load generator.
# Numbers from one run are reported side by side, as ratios where it helps,
# because these machines are noisy. Usage: scripts/bench.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-10}"
rate="${BENCH_RATE:-1000}"
conns=64

command -v oha >/dev/null || cargo install oha --version 1.16.0 --locked
# BENCH_NO_BUNDLE=1 skips the browser bundle (only its size is reported).
[ -n "${BENCH_NO_BUNDLE:-}" ] || ./scripts/bundle.sh --release >&2
cargo build --release -p server --bin tollgate --example mock_upstream --example seed_clients >&2

work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

up_addr=127.0.0.1:18081
tg_addr=127.0.0.1:18080
cat > "$work/tollgate.yaml" <<YAML
models:
  bench:
    provider: openai
    base_url: http://$up_addr/v1
    upstream_model: bench
    price: { input: 0.001, output: 0.001 }
    max_output_tokens: 16
  # The same upstream as three weighted deployments with a fallback: the
  # routing phase compares it, with a rate-limited key, against bench.
  bench3:
    price: { input: 0.001, output: 0.001 }
    max_output_tokens: 16
    fallbacks: [bench]
    deployments:
      - { name: a, provider: openai, base_url: http://$up_addr/v1, upstream_model: bench, weight: 2 }
      - { name: b, provider: openai, base_url: http://$up_addr/v1, upstream_model: bench }
      - { name: c, provider: openai, base_url: http://$up_addr/v1, upstream_model: bench, max_in_flight: 1000 }
users:
  default:
    max: 1000000000
    starting: 1000000000
    model_access: { whitelist: [bench, bench3] }
YAML
db="sqlite://$work/bench.db"
tg=./target/release/tollgate
TOLLGATE_ADMIN_PASSWORD=bench-password-1 $tg create-admin bench --config "$work/tollgate.yaml" --database-url "$db" 2>/dev/null
key=$($tg keys create --user bench --config "$work/tollgate.yaml" --database-url "$db" 2>/dev/null)
# A key with rate limits high enough never to refuse: the limiter runs on every call.
key_limited=$($tg keys create --user bench --requests-per-minute 100000000 --tokens-per-minute 100000000000 \
  --config "$work/tollgate.yaml" --database-url "$db" 2>/dev/null)

./target/release/examples/mock_upstream "$up_addr" >/dev/null &
pids+=($!)
TOLLGATE_LOG=warn $tg serve --config "$work/tollgate.yaml" --database-url "$db" --listen "$tg_addr" 2>"$work/serve.log" &
tg_pid=$!
pids+=($tg_pid)
for _ in $(seq 1 100); do curl -fs "http://$tg_addr/healthz" >/dev/null 2>&1 && break; sleep 0.1; done

body='{"model":"bench","messages":[{"role":"user","content":"Say ok."}],"max_tokens":16}'
body3='{"model":"bench3","messages":[{"role":"user","content":"Say ok."}],"max_tokens":16}'
load() { # url extra-oha-args...
  local url=$1; shift
  oha --no-tui --output-format json -z "${secs}s" -m POST \
    -H "Authorization: Bearer $key" -H "Content-Type: application/json" -d "$body" "$@" "$url"
}
load_routed() { # url extra-oha-args...: bench3 with the rate-limited key
  local url=$1; shift
  oha --no-tui --output-format json -z "${secs}s" -m POST \
    -H "Authorization: Bearer $key_limited" -H "Content-Type: application/json" -d "$body3" "$@" "$url"
}

# Fixed-rate phases: the mock directly, then through Tollgate, at a low and
# at the configured rate, back to back so both see the same machine.
direct_low=$(load "http://$up_addr/v1/chat/completions" -q 100 -c 16)
through_low=$(load "http://$tg_addr/v1/chat/completions" -q 100 -c 16)
direct=$(load "http://$up_addr/v1/chat/completions" -q "$rate" -c 16)
through=$(load "http://$tg_addr/v1/chat/completions" -q "$rate" -c 16)
# Routing and rate limits side by side with a run without them: plain,
# routed, plain again, at the same rate.
routed=$(load_routed "http://$tg_addr/v1/chat/completions" -q "$rate" -c 16)
through2=$(load "http://$tg_addr/v1/chat/completions" -q "$rate" -c 16)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$tg_pid/stat"; }
# The JSON API at 100 req/s while 8 connections sign in with the right
# password (so every attempt runs argon2): what a sign-in flood costs it.
oha --no-tui -z "${secs}s" -c 8 -m POST -H "Origin: http://$tg_addr" -H "Accept: application/json" \
  -H "Content-Type: application/x-www-form-urlencoded" -d "username=bench&password=bench-password-1" \
  "http://$tg_addr/api/login" >/dev/null 2>&1 &
flood_pid=$!
through_flood=$(load "http://$tg_addr/v1/chat/completions" -q 100 -c 16)
wait "$flood_pid" || true
count_rows() { python3 -c "import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute('select count(*) from ledger').fetchone()[0])" "$work/bench.db"; }
sleep 1 # ledger rows are committed just behind the responses
rows_before=$(count_rows)
flood_rss_kb=$(awk '/VmHWM/ {print $2}' "/proc/$tg_pid/status")
echo 5 > "/proc/$tg_pid/clear_refs" 2>/dev/null || true # the peak below is the load's own
# BENCH_PROFILE=1: where tollgate's CPU time goes at full load (perf, software clock).
if [ -n "${BENCH_PROFILE:-}" ]; then
  perf record -q -e cpu-clock -F 499 -g -o "$work/perf.data" -p "$tg_pid" -- sleep "$secs" 2>/dev/null &
  perf_pid=$!
fi
cpu_before=$(cpu_ticks)
max=$(load "http://$tg_addr/v1/chat/completions" -c "$conns")
cpu_after=$(cpu_ticks)
if [ -n "${BENCH_PROFILE:-}" ]; then
  wait "$perf_pid" || true
  { perf report -i "$work/perf.data" --no-children --sort dso --stdio 2>/dev/null | grep -E '^ +[0-9]'
    perf report -i "$work/perf.data" --no-children --sort dso,sym --percent-limit 1 --stdio 2>/dev/null | grep -E '^ +[0-9]'
  } > "${BENCH_PROFILE_OUT:-/dev/stderr}" || true
fi
rows_at_end=$(count_rows) # committed by the time the load stopped
rss_kb=$(awk '/VmHWM/ {print $2}' "/proc/$tg_pid/status")
sleep 3 # the last rows, and idle leases going back to the pool
rows_after=$(count_rows)
# Every micro-coin that left the pool is in the ledger or still on a lease.
books=$(python3 - "$work/bench.db" <<'PY'
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
balance = db.execute("select balance_micro from pools where owner_kind = 'user'").fetchone()[0]
leased = db.execute("select coalesce(sum(amount_micro), 0) from leases").fetchone()[0]
spent = db.execute("select coalesce(sum(coins_micro), 0) from ledger").fetchone()[0]
print("yes" if balance + leased + spent == 10**9 * 10**6 else f"NO: {balance} + {leased} + {spent}")
PY
)

# The console with 1,000 clients and 10,000 keys: server-side render of /clients.
./target/release/examples/seed_clients "$db" "$work/tollgate.yaml" 1000 10000 >&2
cookie=$(curl -s -o /dev/null -D - -H "Accept: application/json" -H "Origin: http://$tg_addr" \
  --data-urlencode username=bench --data-urlencode password=bench-password-1 \
  "http://$tg_addr/api/login" | awk -F'[ ;]' 'tolower($1) == "set-cookie:" {print $2}')
render_ms=()
for _ in 1 2 3 4 5 6 7; do
  render_ms+=("$(curl -s -o "$work/clients.html" -w '%{time_total}' -H "Cookie: $cookie" "http://$tg_addr/clients")")
done
rows=$({ grep -o 'data-client=' "$work/clients.html" || true; } | wc -l)
[ "$rows" -gt 0 ] || echo "warning: /clients showed no rows (signed in: ${cookie:+yes}); $(head -c 300 "$work/clients.html")" >&2
render=$(printf '%s\n' "${render_ms[@]}" | sort -n | sed -n 4p)

wasm_raw=$(stat -c %s target/site/pkg/tollgate.wasm 2>/dev/null || echo 0)
wasm_gz=$({ gzip -9 -c target/site/pkg/tollgate.wasm 2>/dev/null || true; } | wc -c)

BENCH_ROUTED="$routed" BENCH_THROUGH2="$through2" python3 - "$direct" "$through" "$max" "$rows_before" "$rows_after" "$rss_kb" "$secs" "$rate" "$conns" "$render" "$rows" "$wasm_raw" "$wasm_gz" "$books" "$rows_at_end" "$direct_low" "$through_low" "$((cpu_after - cpu_before))" "$(getconf CLK_TCK)" "$through_flood" "$flood_rss_kb" <<'PY'
import json, os, sys
direct, through, peak = (json.loads(a) for a in sys.argv[1:4])
direct_low, through_low = (json.loads(a) for a in sys.argv[16:18])
cpu_s = int(sys.argv[18]) / int(sys.argv[19])
flood = json.loads(sys.argv[20])
flood_rss_kb = int(sys.argv[21])
rows_before, rows_after, rss_kb, secs, rate, conns = map(int, sys.argv[4:10])
render_s, page_rows, wasm_raw, wasm_gz = float(sys.argv[10]), int(sys.argv[11]), int(sys.argv[12]), int(sys.argv[13])
def pct(r, p): return r["latencyPercentiles"][p] * 1000
def ok(r): return r["statusCodeDistribution"].get("200", 0)
d50, d99, t50, t99 = pct(direct, "p50"), pct(direct, "p99"), pct(through, "p50"), pct(through, "p99")
served = ok(peak)
print(f"## Benchmark ({secs} s per phase, one run)\n")
print("| measure | direct to mock | through Tollgate | overhead |")
print("|---|---|---|---|")
l50, l99, m50, m99 = pct(direct_low, "p50"), pct(direct_low, "p99"), pct(through_low, "p50"), pct(through_low, "p99")
print(f"| p50 latency at 100 req/s | {l50:.3f} ms | {m50:.3f} ms | {m50 - l50:+.3f} ms ({m50 / l50:.2f}x) |")
print(f"| p99 latency at 100 req/s | {l99:.3f} ms | {m99:.3f} ms | {m99 - l99:+.3f} ms ({m99 / l99:.2f}x) |")
print(f"| p50 latency at {rate} req/s | {d50:.3f} ms | {t50:.3f} ms | {t50 - d50:+.3f} ms ({t50 / d50:.2f}x) |")
f50, f99 = pct(flood, "p50"), pct(flood, "p99")
print(f"| p99 latency at {rate} req/s | {d99:.3f} ms | {t99:.3f} ms | {t99 - d99:+.3f} ms ({t99 / d99:.2f}x) |")
print(f"| successful at {rate} req/s | {ok(direct)} | {ok(through)} | |")
routed, through2 = json.loads(os.environ["BENCH_ROUTED"]), json.loads(os.environ["BENCH_THROUGH2"])
r50, p50b = pct(routed, "p50"), pct(through2, "p50")
plain50 = (t50 + p50b) / 2
print()
print(f"| routing and rate limits, {rate} req/s | p50 | p99 | 200s |")
print("|---|---|---|---|")
print(f"| `bench`: one upstream, no limits (before) | {t50:.3f} ms | {t99:.3f} ms | {ok(through)} |")
print(f"| `bench3`: 3 weighted deployments, a fallback, a rate-limited key | {r50:.3f} ms | {pct(routed, 'p99'):.3f} ms | {ok(routed)} |")
print(f"| `bench`: one upstream, no limits (after) | {p50b:.3f} ms | {pct(through2, 'p99'):.3f} ms | {ok(through2)} |")
print(f"| routing and limits add to p50 (vs. the mean of before and after) | {r50 - plain50:+.3f} ms | | |")
print(f"| p50 / p99 through Tollgate at 100 req/s: quiet, then during a sign-in flood (8 connections, argon2 each) | {m50:.3f} / {m99:.3f} ms | {f50:.3f} / {f99:.3f} ms | {f50 - m50:+.3f} / {f99 - m99:+.3f} ms |")
print()
print(f"| throughput, {conns} connections, no rate limit | value |")
print("|---|---|")
print(f"| requests/s through Tollgate | {peak['summary']['requestsPerSec']:.0f} |")
print(f"| CPU time of tollgate per call (user + system) | {cpu_s / max(served, 1) * 1e6:.1f} µs |")
print(f"| 200 responses | {served} (of {sum(peak['statusCodeDistribution'].values())}) |")
print(f"| ledger rows written in that phase | {rows_after - rows_before} |")
print(f"| ledger rows committed when the load stopped | {int(sys.argv[15]) - rows_before} |")
print(f"| every served call in the ledger | {'yes' if rows_after - rows_before >= served else 'NO'} |")
print(f"| pool + leases + ledger = starting balance | {sys.argv[14]} |")
print(f"| peak RSS of tollgate under this load | {rss_kb / 1024:.1f} MB |")
print(f"| peak RSS before it, after the sign-in flood (argon2: 19 MiB a hash) | {flood_rss_kb / 1024:.1f} MB |")
print()
print("| web console | value |")
print("|---|---|")
print(f"| GET /clients, signed in, 1,000 clients and 10,000 keys (median of 7) | {render_s * 1000:.1f} ms, {page_rows} rows on the page |")
print(f"| wasm bundle in target/site (as last built) | {wasm_raw / 1024:.0f} KiB raw, {wasm_gz / 1024:.0f} KiB gzip -9 |")
PY

# The usage explorer with 1,000,000 ledger rows, on its own database and port.
echo
./scripts/bench-usage.sh
