#!/usr/bin/env bash
# The code_lm recipe of issue 22 (benchmarks/code_lm_recipe.py) on one GPU machine, as a
# detached job that outlives a single 10-minute device command (the machine stays warm
# between calls and /tmp survives; it goes back ~30 s after a call returns, so call `wait`
# again at once):
#
#   DATA=shared/data/linux-c bash benchmarks/code_lm_recipe.sh start   # install, copy, launch, wait
#   bash benchmarks/code_lm_recipe.sh wait                             # wait again (installs .whl/ray)
#
# Each call waits up to WAIT_S (default 540) and packs what exists into $OUT/code_lm.tgz
# (results, logs, metrics, fronts; no checkpoints). $OUT/code_lm_status.txt says which stage
# runs. Carry in the first call DATA's folder (linux-c, 37 MB) and .whl/optuna (optuna and
# pydantic, as benchmarks/gpu_suite.sh installs them: cosearch needs pydantic, the searches
# optuna); Ray (.whl/ray from benchmarks/gpu_ray_wheels.sh, 44 MB) does not fit beside the
# data, so carry it in the second call: `wait` installs it, and the recipe's job stage waits
# for it up to RAY_WAIT_S (default 900 s).
#
# Settings: BUDGET_S (supernet wall time, default 600), STEPS (skip the calibration: e.g. the
# steps an earlier run's calibration chose), RECIPE_ARGS (more code_lm_recipe.py flags,
# e.g. "--search-trials 200 --alone-fraction 0.15"), W (work folder, default /tmp/codelm).
set -u
W=${W:-/tmp/codelm}
WAIT_S=${WAIT_S:-540}

install_wheels() {
  mkdir -p /tmp/site  # exists before Python starts, so packages installed later are found
  if [ -d .whl/optuna ] && ! python3 -c "import optuna, pydantic" 2>/dev/null; then
    python3 -m pip install -q --no-index --find-links .whl/optuna optuna pydantic >> $W/logs/pip.log 2>&1
  fi
  if ls .whl/ray/*.whl > /dev/null 2>&1 && [ ! -d /tmp/site/ray ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
      .whl/ray/*.whl >> $W/logs/pip.log 2>&1
  fi
}

pack() {
  [ -n "${OUT:-}" ] || return 0
  ( cd $W && tar czf "$OUT/code_lm.tgz.tmp" --ignore-failed-read results logs \
      supernet/config.json supernet/metrics.jsonl supernet/summary.json \
      front/candidates.json front/inherited.jsonl front/bits_front.json front/bits_front.png \
      $(ls -d search_*/*.csv search_*/*.json search_*/*.png search_*/*.html alone/*/*.json alone/*/run/metrics.jsonl \
        jobs/*/log.txt 2>/dev/null) 2>/dev/null
    mv "$OUT/code_lm.tgz.tmp" "$OUT/code_lm.tgz" )
  tail -3 $W/logs/recipe.log > "$OUT/code_lm_status.txt" 2>/dev/null
}

case "${1:-}" in
  start)
    [ -n "${DATA:-}" ] && [ -d "$DATA" ] || { echo "set DATA to the linux-c folder (train/valid/test .txt.xz)" >&2; exit 2; }
    mkdir -p $W/logs $W/results
    install_wheels
    mkdir -p $W/repo $W/data
    tar cf - --exclude=.whl --exclude=.git --exclude=shared . | tar xf - -C $W/repo
    cp -r "$DATA"/. $W/data/
    cd $W/repo || exit 1
    export PYTHONPATH=/tmp/site:$W/repo PYTHONUNBUFFERED=1
    export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
    # shellcheck disable=SC2086
    setsid nohup python3 benchmarks/code_lm_recipe.py --data $W/data --work $W --results $W/results \
      --budget-s ${BUDGET_S:-600} ${STEPS:+--steps $STEPS} --ray-wait-s ${RAY_WAIT_S:-900} ${RECIPE_ARGS:-} \
      > $W/logs/recipe.log 2>&1 < /dev/null &
    echo $! > $W/recipe.pid
    cd - > /dev/null
    ;;
  wait)
    [ -d $W/logs ] || { echo "no recipe under $W: run 'start' first (the machine may have been given back)" >&2; exit 2; }
    install_wheels ;;
  *) echo "usage: DATA=... $0 start | $0 wait" >&2; exit 2 ;;
esac
end=$((SECONDS + WAIT_S))
while [ $SECONDS -lt $end ] && kill -0 "$(cat $W/recipe.pid)" 2>/dev/null; do
  sleep 20; pack
done
pack
cat "$OUT/code_lm_status.txt" 2>/dev/null
kill -0 "$(cat $W/recipe.pid)" 2>/dev/null && echo "still running: call '$0 wait' again" || echo "recipe finished"
