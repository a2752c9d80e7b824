#!/usr/bin/env bash
# Fetch Multi30k task 1, English-German, raw (untokenised) text, from the dataset's own
# repository, github.com/multi30k/dataset (folder data/task1/raw): train (29,000 pairs),
# val (1,014) and test_2016_flickr (1,000), one sentence a line, gzip, aligned line by line.
# That is the folder layout `cosearch train --task translation --data DIR` reads.
# Licence: research and education use; cite Elliott et al. 2016, "Multi30K: Multilingual
# English-German Image Descriptions" (ACL Anthology W16-3210).
#
#   benchmarks/fetch_multi30k.sh [DIR]        (default: data/multi30k)
#
# Needs curl (or wget) and network access; MULTI30K_URL overrides where the files come
# from (a mirror, or file:///path for a local copy). Files already fetched are kept, a
# download goes to FILE.part first, and every file is checked (gzip, line count) before
# it takes its name, so a failed or interrupted run can simply be run again.
set -euo pipefail
dir=${1:-data/multi30k}
base=${MULTI30K_URL:-https://raw.githubusercontent.com/multi30k/dataset/master/data/task1/raw}
declare -A lines=([train]=29000 [val]=1014 [test_2016_flickr]=1000)

fetch() {  # URL FILE
  if command -v curl >/dev/null; then curl -fsSL --retry 3 -o "$2" "$1"
  elif command -v wget >/dev/null; then wget -q -O "$2" "$1"
  else echo "fetch_multi30k: needs curl or wget" >&2; exit 2
  fi
}

mkdir -p "$dir"
for split in train val test_2016_flickr; do
  for lang in en de; do
    f="$split.$lang.gz"
    if [ ! -s "$dir/$f" ]; then
      echo "fetching $base/$f" >&2
      fetch "$base/$f" "$dir/$f.part"
      n=$(gzip -dc "$dir/$f.part" | wc -l)
      if [ "$n" -ne "${lines[$split]}" ]; then
        echo "fetch_multi30k: $f has $n lines, expected ${lines[$split]}; not the Multi30k file" >&2
        rm -f "$dir/$f.part"
        exit 1
      fi
      mv "$dir/$f.part" "$dir/$f"
    fi
  done
done
echo "Multi30k En-De in $dir: $(ls "$dir" | tr '\n' ' ')"
