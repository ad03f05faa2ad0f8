#!/usr/bin/env bash
# Instructions per request over real HTTP, exact and free of the machine's
# noise: the load bench's server runs under callgrind, and each route gets
# the same number of keep-alive GETs from curl (one connection). Callgrind's
# counters are zeroed before a route's requests and dumped after them, so
# each dump holds what the server did for that route's requests: parsing,
# routing, the cache, writing the response (user space only; the kernel's
# share is the same for every route and not counted).
#
#     loadbench/instructions.sh [N] [ROUTE...]
#
# N defaults to 2000 requests; the routes to plain, ours-lean and ours (any
# of the server's routes: origin, axum-response-cache, tower-http-cache,
# plain-hit-headers), each at its 1 KiB size. Needs valgrind and curl
# (Debian: apt-get install valgrind curl); builds the bench first. Prints
# each route's instructions per request and its ratio to the first route's.
set -euo pipefail

n=${1:-2000}
shift || true
routes=("$@")
[ ${#routes[@]} -gt 0 ] || routes=(plain ours-lean ours)

here=$(cd "$(dirname "$0")" && pwd)
exe=$(cargo bench --manifest-path "$here/Cargo.toml" --bench load --no-run \
    --message-format=json 2>/dev/null |
    sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -1)
[ -x "$exe" ] || { echo "instructions.sh: no bench executable" >&2; exit 1; }

out=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; exec 3>&-; rm -rf "$out"' EXIT
# The server exits when its stdin closes: it is held open on fd 3.
mkfifo "$out/stdin"
valgrind --tool=callgrind --callgrind-out-file="$out/cg.%p" \
    "$exe" serve <"$out/stdin" >"$out/listening" 2>"$out/valgrind.log" &
pid=$!
exec 3>"$out/stdin"
for _ in $(seq 200); do
    grep -q LISTENING "$out/listening" 2>/dev/null && break
    sleep 0.2
done
port=$(awk '/LISTENING/ {print $2}' "$out/listening")
[ -n "$port" ] || { echo "instructions.sh: the server did not start" >&2; exit 1; }

# One curl, one connection, `count` GETs of `path`.
get() {
    local path=$1 count=$2 urls=()
    for _ in $(seq "$count"); do urls+=("http://127.0.0.1:$port$path"); done
    curl -sf "${urls[@]}" >/dev/null
}

first=""
for route in "${routes[@]}"; do
    path="/$route/1k"
    get "$path" 20 # warm: the first stores, and the connection's buffers grow
    callgrind_control -z "$pid" >/dev/null 2>&1
    get "$path" "$n"
    callgrind_control -d "$route" "$pid" >/dev/null 2>&1
    dump=$(grep -al "^desc: Trigger: dump $route\$" "$out"/cg.* | tail -1)
    total=$(awk '/^summary:/ {print $2}' "$dump")
    per=$((total / n))
    [ -n "$first" ] || first=$per
    awk -v r="$route" -v p="$per" -v f="$first" -v b="${routes[0]}" \
        'BEGIN { printf "%-22s %8d instructions per request  %.3f x %s\n", r, p, p / f, b }'
done
