#!/usr/bin/env bash
# The GPU measurements of issues 11-13 on one 4-GPU machine, as detached jobs that outlive a
# single 10-minute device command (the machine stays warm between calls; /tmp survives):
#
#   bash benchmarks/gpu_suite.sh start   # first call: wheels, a copy of the tree, launch, wait
#   bash benchmarks/gpu_suite.sh wait    # later calls: wait; both pack the results into $OUT
#
# GPU 0: the Multi30k recipe (train, then test_2016_flickr BLEU), alone on its GPU.
# GPU 1: fidelity supernets of a second seed (the first seed's jobs reused).
# GPUs 2+3: Ray Train on 1 and 2 GPUs and a kill+resume, then on GPU 3 the --budget-s
#   calibration check, train_gpu throughput and supernet_overhead (reference vs fused), and on
#   GPU 2 the search throughput (once the seed-1 layer supernet exists);
#   then the co-search benchmark, one process per sampler and seed, on GPUs 1 and 2.
# Needs .data/multi30k, .whl/optuna and .whl/ray (gpu_ray_wheels.sh) carried along.
# The recorded 2026-11-27 H100 run used this script at de69c7f (Ray --steps 60, throughput
# --warmup 8, fidelity --time-budget 600: too short for three supernets on one GPU, which
# stopped at 508-549 of 625 steps); the settings below are the corrected ones.
#
# The machine goes back ~30 s after a call returns and 30 min after it started, taking /tmp
# with it: call `wait` again at once, and plan jobs to end inside the calls already made (the
# third session lost a recipe run at step 2,550 of 2,600 that way).
#
# PARTS picks what runs (default: all): recipe fidelity ray speed search; `standalone` (not in
# the default) trains archs alone from scratch with the recipe: ALONE lists ARCH[,ARCH..]:GPU
# (default "largest:1 smallest,random2:2"; on one GPU, e.g. "largest:0 smallest:0 random2:0");
# a job on GPU 1, 2 or 3 waits until fidelity, Ray or the speed benchmarks are done with it
# (it may still overlap the search, which starts after the speed benchmarks). RECIPE_DROPOUT trains the recipe on a copy of the preset with
# that dropout, RECIPE_SEED its seed; RAY_KILL_RESUME=0 skips the kill+resume,
# CALIBRATE=0 the --budget-s calibration, OVERHEAD=0 supernet_overhead; RAY_GPUS and SPEED_GPU
# move Ray and the speed benchmarks; RAY_ARGS (e.g. "--steps 160 --skip-windows 8") and
# THROUGHPUT_ARGS (default "--path both --compile-fixed --compile-plain default") replace settings. A full 30-minute
# recipe does not fit a 30-minute device session together with anything else: run
# `PARTS=recipe RECIPE_STEPS=4300` on a one-GPU machine (about 2.4 steps/s on an H100) and
# the other parts on a 4-GPU one. SEARCH_RUN searches another trained run (e.g. a recipe
# run: less noisy quality) instead of the fidelity run's seed-1 layer supernet. The search
# starts after the speed benchmarks, so that they time an idle host.
set -u
W=/tmp/suite
RECIPE_STEPS=${RECIPE_STEPS:-4300}
RECIPE_SEED=${RECIPE_SEED:-0}
RECIPE_ARGS="--steps $RECIPE_STEPS --max-tokens 32768 --gpu --ema-start 0.75 --ema-decay 0.998 --log-every 50
  --ckpt-every 500 --no-progress --json"
WAIT_S=${WAIT_S:-545}
PARTS=${PARTS:-recipe fidelity ray speed search}
RAY_GPUS=${RAY_GPUS:-2,3}  # Ray's two GPUs (a 2-GPU machine: RAY_GPUS=0,1)
SPEED_GPU=${SPEED_GPU:-3}  # the speed benchmarks' GPU (a 1-GPU machine: SPEED_GPU=0)

want() { case " $PARTS " in *" $1 "*) return 0;; *) return 1;; esac; }

pack() {
  [ -n "${OUT:-}" ] || return 0
  tar czf "$OUT/suite.tgz.tmp" -C /tmp --exclude='*.pt' --exclude='suite/repo' suite 2>/dev/null
  mv "$OUT/suite.tgz.tmp" "$OUT/suite.tgz"
}

wait_for() {  # wait_for FILE: until FILE exists
  while [ ! -e "$1" ]; do sleep 5; done
}

arch_of() {  # arch_of NAME: largest, smallest or the JSON of random arch N (SearchSpace.sample(N))
  case $1 in
    random*) [ -e $W/$1.json ] || python3 -c "
from cosearch.space import SearchSpace
open('$W/$1.json', 'w').write(SearchSpace.load('$SPACE').sample(${1#random}).to_json())"
      echo $W/$1.json;;
    *) echo $1;;
  esac
}

evaluate() {  # evaluate GPU RUN ARCH SPLIT OUT [eval flags]: one `cosearch eval`, JSON to OUT
  local g=$1 run=$2 a=$3 split=$4 out=$5; shift 5
  CUDA_VISIBLE_DEVICES=$g $C eval --run $W/$run --arch $(arch_of $a) --split $split --gpu --json \
    --no-progress "$@" > $out 2>> $L/${run}_eval.log
}

train_alone() {  # train_alone GPU ARCH: the recipe on that one sub-network, then its test BLEU
  CUDA_VISIBLE_DEVICES=$1 $C train --space $SPACE --task translation --data $D --out $W/alone_$2 \
    --arch $(arch_of $2) $RECIPE_ARGS --seed $RECIPE_SEED > $L/alone_$2_train.log 2>&1
  evaluate $1 alone_$2 $2 test $R/alone_$2_avg.json --beam 4
  evaluate $1 alone_$2 $2 test $R/alone_$2_raw.json --beam 4 --raw-weights
}

jobs_run() {
  cd $W/repo || exit 1
  export PYTHONPATH=$W/repo OMP_NUM_THREADS=1 PYTHONUNBUFFERED=1
  export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
  local D=$W/repo/.data/multi30k C=$W/cosearch L=$W/logs R=$W/results
  # the recipe's space: the preset, or a copy with another dropout (RECIPE_DROPOUT)
  SPACE=multi30k
  if [ -n "${RECIPE_DROPOUT:-}" ]; then
    SPACE=$W/multi30k_dropout$RECIPE_DROPOUT.yaml
    sed "s/^dropout: .*/dropout: $RECIPE_DROPOUT/" cosearch/spaces/multi30k.yaml > $SPACE
    grep -q "^dropout: $RECIPE_DROPOUT\$" $SPACE || { echo "RECIPE_DROPOUT: no 'dropout:' line in the preset" >&2; exit 1; }
  fi
  for i in 0 1 2 3; do arch_of random$i > /dev/null; done  # written once, before the jobs read them
  nvidia-smi --query-gpu=index,name,memory.total --format=csv > $L/gpus.csv

  # GPU 0: the recipe, then its evaluation (weight average first, then the raw weights), then
  # the length penalty for beam 5 picked on the validation set and that setting on test
  want recipe && ( date +%s > $W/recipe.start
    CUDA_VISIBLE_DEVICES=0 $C train --space $SPACE --task translation --data $D --out $W/recipe \
      $RECIPE_ARGS --seed $RECIPE_SEED > $L/recipe_train.log 2>&1
    date +%s > $W/recipe.trained
    for spec in largest:avg smallest:avg largest:raw smallest:raw random0:avg random1:avg random2:avg random3:avg; do
      a=${spec%%:*}; w=${spec##*:}
      evaluate 0 recipe $a test $R/recipe_${a}_$w.json --beam 4 $( [ $w = raw ] && echo --raw-weights )
    done
    for a in largest smallest; do
      for lp in 0.6 1.0 1.4; do evaluate 0 recipe $a valid $R/recipe_${a}_valid_b5_lp$lp.json --beam 5 --len-penalty $lp; done
      lp=$(python3 -c "
import json; r = {lp: json.load(open('$R/recipe_${a}_valid_b5_lp%s.json' % lp))['bleu'] for lp in ('0.6', '1.0', '1.4')}
print(max(r, key=r.get))") && [ -n "$lp" ] &&
        evaluate 0 recipe $a test $R/recipe_${a}_test_b5_lp$lp.json --beam 5 --len-penalty $lp
    done
    date +%s > $W/recipe.done ) &

  # standalone: each arch of ALONE (ARCH:GPU) trained alone from scratch with the same recipe,
  # all at once; a job on a Ray or speed GPU waits for them (default: the largest on GPU 1, fidelity's,
  # then the smallest and random arch 2 one after the other on GPU 2)
  if want standalone; then
    for spec in ${ALONE:-largest:1 smallest,random2:2}; do
      case $spec in *:[0-9]) ;; *) echo "ALONE: '$spec' is not ARCH[,ARCH]:GPU" >&2; continue;; esac
      # a GPU that another part uses is taken once that part is done with it
      ( g=${spec##*:}
        [ "$g" = 1 ] && wait_for $W/fidelity.done
        case ",$RAY_GPUS," in *",$g,"*) wait_for $W/ray.done;; esac
        [ "$g" = "$SPEED_GPU" ] && wait_for $W/speed.done
        for a in $(echo ${spec%%:*} | tr , ' '); do train_alone $g $a; done
        touch $W/alone_${spec%%:*}.done ) &
    done
  fi

  # GPU 1: fidelity, second supernet seed for every mode
  want fidelity && ( CUDA_VISIBLE_DEVICES=1 python3 benchmarks/fidelity.py --data $D --out $W/fid \
      --reuse benchmarks/results/fidelity_h200x4_run --supernet-seeds 2 --steps 625 --time-budget 780 \
      --eval-s 170 --result $R/fidelity.json > $L/fidelity.log 2>&1
    touch $W/fidelity.done ) &

  # GPUs 2+3: Ray Train scaling and kill+resume, then the budget calibration on GPU 3
  want fidelity || touch $W/fidelity.done
  want ray || touch $W/ray.done
  want speed || touch $W/speed.done
  ( want ray && CUDA_VISIBLE_DEVICES=$RAY_GPUS PYTHONPATH=/tmp/site:$PYTHONPATH python3 benchmarks/ray_gpu.py --data $D \
      --workers 1 2 --concurrent-singles $( [ "${RAY_KILL_RESUME:-1}" = 1 ] && echo --kill-resume ) ${RAY_ARGS:-} --out $R/ray_gpu.json > $L/ray.log 2>&1
    touch $W/ray.done
    want speed || exit 0
    if [ "${CALIBRATE:-1}" = 1 ]; then
      CUDA_VISIBLE_DEVICES=$SPEED_GPU python3 benchmarks/train_gpu.py quality --data $D --mos layer --budget-s 180 \
        --out $R/calibration.json > $L/calibration.log 2>&1
    fi
    touch $W/calibration.done
    CUDA_VISIBLE_DEVICES=$SPEED_GPU python3 benchmarks/train_gpu.py throughput --data $D --max-tokens 32768 --repeats 12 \
      ${THROUGHPUT_ARGS:---path both --compile-fixed --compile-plain default} --out $R/throughput.json > $L/throughput.log 2>&1
    [ "${OVERHEAD:-1}" = 1 ] && CUDA_VISIBLE_DEVICES=$SPEED_GPU python3 benchmarks/supernet_overhead.py --device cuda \
      --batch 128 --repeats 10 --path both --out $R/overhead.json > $L/overhead.log 2>&1
    touch $W/speed.done ) &

  # search: on the seed-1 layer supernet once it is trained (its job result then has "train"),
  # or on SEARCH_RUN; after the speed benchmarks
  want search && ( RUN=${SEARCH_RUN:-$W/fid/runs/supernet_layer_seed1}
    until [ -n "${SEARCH_RUN:-}" ] || python3 -c "import json,sys; sys.exit('train' not in json.load(open('$W/fid/jobs/supernet_layer_seed1.json')))" 2>/dev/null; do
      sleep 10; [ -e $W/fidelity.done ] && break
    done
    wait_for $W/ray.done
    wait_for $W/speed.done
    CUDA_VISIBLE_DEVICES=2 python3 benchmarks/search_real.py $RUN --gpu --workers 6 --no-search \
      --throughput-seconds 40 --out $W/sr/throughput > $L/search_throughput.log 2>&1
    g=1
    for seed in 0 1 2; do for s in tpe nsga2 evolution random; do
      CUDA_VISIBLE_DEVICES=$g python3 benchmarks/search_real.py $RUN --gpu --workers 2 --no-throughput \
        --samplers $s --seeds 1 --first-seed $seed --search-bleu-sentences 100 --time-budget 840 \
        --out $W/sr/${s}_$seed > $L/search_${s}_$seed.log 2>&1 &
      g=$((3 - g))
    done; done
    wait
    python3 benchmarks/search_real.py merge $W/sr/*/search_real.json --out $R/search > $L/search_merge.log 2>&1
    touch $W/search.done ) &
  wait
  touch $W/all.done
}

case "${1:-}" in
  start)
    mkdir -p $W/logs $W/results
    python3 -m pip install -q --no-index --find-links .whl/optuna optuna pydantic > $W/logs/pip.log 2>&1
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
      .whl/ray/*.whl >> $W/logs/pip.log 2>&1
    mkdir -p $W/repo && tar cf - --exclude=.whl --exclude=.git . | tar xf - -C $W/repo
    printf '#!/bin/sh\nexec python3 -c "import sys; from cosearch.cli import main; sys.exit(main())" "$@"\n' > $W/cosearch
    chmod +x $W/cosearch
    setsid nohup bash benchmarks/gpu_suite.sh jobs > $W/logs/suite.log 2>&1 < /dev/null &
    ;;
  jobs) jobs_run; exit 0 ;;
  wait) ;;
  *) echo "usage: $0 start|wait" >&2; exit 2 ;;
esac
end=$((SECONDS + WAIT_S))
while [ $SECONDS -lt $end ] && [ ! -e $W/all.done ]; do
  sleep 30; pack
done
pack
ls $W/*.done $W/*.start $W/*.trained 2>/dev/null
tail -n 2 $W/logs/*.log
