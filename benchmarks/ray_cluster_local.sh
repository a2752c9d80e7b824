#!/usr/bin/env bash
# The README's Ray cluster recipe, checked on one machine (issue 27, item 4): a head and a
# second node (`ray start --address`), one CPU each, token authentication with a token made
# here, then `cosearch train --workers 2` on the CPU against that cluster: killed after its
# first checkpoint and re-run (it must resume), and an uninterrupted run in another folder;
# both must end with the same weight digest on both ranks. Stops only the Ray processes it
# started (by the temp dir they run under), never `ray stop` (that would stop every Ray on
# the machine). From the repo root, with cosearch and ray[train] installed:
#
#     DATA=path/to/tinyshakespeare/input.txt bash benchmarks/ray_cluster_local.sh [WORKDIR]
set -euo pipefail
WORK=${1:-$(mktemp -d /tmp/cosearch_cluster_XXXX)}
mkdir -p "$WORK"
TEMP="$WORK/ray"                     # the head's temp dir; the second node takes it from the head
PORT=${PORT:-6391}
export DATA=${DATA:?set DATA to a text file, e.g. shared/data/tinyshakespeare/input.txt}
export OMP_NUM_THREADS=1 RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH="$WORK/token" RAY_ADDRESS="127.0.0.1:$PORT"
python3 -c "import secrets; print(secrets.token_hex(32))" > "$RAY_AUTH_TOKEN_PATH"
chmod 600 "$RAY_AUTH_TOKEN_PATH"

stop_ours() {  # every process whose command line or working dir names this check's folders
  local pids=""
  for p in $(ps -eo pid --no-headers); do
    if { tr '\0' ' ' < /proc/$p/cmdline; } 2>/dev/null | grep -q "$TEMP" || [ "$(readlink /proc/$p/cwd 2>/dev/null)" = "$WORK" ]; then
      [ "$p" != "$$" ] && pids="$pids $p"
    fi
  done
  [ -n "$pids" ] && { kill $pids 2>/dev/null || true; sleep 5; kill -9 $pids 2>/dev/null || true; }
  return 0
}
trap stop_ours EXIT
cd "$WORK"  # the Ray processes inherit it: stop_ours finds them by it

ray start --head --port "$PORT" --num-cpus 1 --temp-dir "$TEMP" --include-dashboard false --disable-usage-stats >/dev/null
ray start --address "127.0.0.1:$PORT" --num-cpus 1 --disable-usage-stats >/dev/null
until [ "$(ray status | sed -n '/Active:/,/Pending:/p' | grep -c ' node_')" = 2 ]; do sleep 2; done
ray status | sed -n '/Active:/,/Pending:/p'

train() {  # $1: run folder
  cosearch train --space tiny_lm --task lm --data "$DATA" --out "$1" --steps 8 --workers 2 --max-tokens 256 \
    --log-every 2 --ckpt-every 4 --bit-stages off --no-progress --json
}
digests() { python3 -c "import json,glob,sys; print(sorted(json.load(open(f))['state_digest'][:16] for f in glob.glob(sys.argv[1] + '/workers/rank*.json')))" "$1"; }

(setsid bash -c "$(declare -f train); train $WORK/killed" > "$WORK/killed.log" 2>&1 & echo $! > "$WORK/killed.pid")
until [ -f "$WORK/killed/checkpoints/step_00000004.pt" ]; do sleep 2; done
ray status | grep -A1 "Total Usage"   # 2.0/2.0 CPU: one worker on each node
kill -9 -- -"$(cat "$WORK/killed.pid")"
sleep 10
train "$WORK/killed" > "$WORK/resumed.json" 2> "$WORK/resumed.log"
train "$WORK/whole" > "$WORK/whole.json" 2> "$WORK/whole.log"
python3 - "$WORK" <<'EOF'
import json, sys
work = sys.argv[1]
def summary(name):
    s = open(f"{work}/{name}.json").read()
    return json.loads(s[s.index("{"):])
r, w = summary("resumed"), summary("whole")
print({"resumed_from": r["start_step"], "finished": r["finished"], "digest_resumed": r["state_digest"][:16],
       "digest_uninterrupted": w["state_digest"][:16], "equal": r["state_digest"] == w["state_digest"]})
EOF
echo "ranks, resumed run: $(digests "$WORK/killed")"
echo "ranks, uninterrupted run: $(digests "$WORK/whole")"
