#!/usr/bin/env bash
# Build the wheels that Ray Train needs on the GPU machines, small enough to carry there.
#
# The GPU image has torch, numpy, pandas, pyarrow, fsspec, requests, click, filelock,
# msgpack, packaging, protobuf, pyyaml and attrs, but no Ray, jsonschema or pydantic.
# `import ray.train.torch` (Ray Train V2) imports pandas, pyarrow and pydantic; tensorboardX
# and the dashboard's packages are not needed for a TorchTrainer with the dashboard off.
#
# usage (run HERE, from the repository root; needs pip and the internet):
#   benchmarks/gpu_ray_wheels.sh [PYTHON_VERSION=3.12] [DEST=.whl/ray] [--with-image-packages]
# --with-image-packages also fetches the packages the GPU image already has (for testing
# the set in a fresh virtual environment; not for carrying).
#
# The ray wheel is stripped of what a TorchTrainer never loads (the 34 MB Java jar, RLlib,
# Serve, Ray LLM and the dashboard's web client) and its RECORD rewritten to match.
# On the GPU machine, with DEST carried (the 64 MiB limit: this set is about 44 MB):
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
#       --target /tmp/site .whl/ray/*.whl && export PYTHONPATH=/tmp/site:$PYTHONPATH
set -euo pipefail
PY=${1:-3.12}
DEST=${2:-.whl/ray}
WITH_IMAGE=${3:-}
RAY_VERSION=2.60.0
# missing on the GPU image (versions as tested in the dev venv)
DEVICE_PKGS="jsonschema==4.26.0 jsonschema-specifications==2025.9.1 referencing==0.37.0
rpds-py==2026.9.1 pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5"
# already on the GPU image; fetched only with --with-image-packages
IMAGE_PKGS="click filelock msgpack packaging protobuf pyyaml requests urllib3 idna certifi
charset-normalizer attrs typing-extensions pandas pyarrow numpy fsspec python-dateutil six tzdata"

mkdir -p "$DEST"
fetch() {
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$PY" --implementation cp \
    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_28_x86_64 --platform manylinux1_x86_64 -d "$DEST" "$@"
}
fetch "ray==$RAY_VERSION"
# shellcheck disable=SC2086
fetch $DEVICE_PKGS
if [ "$WITH_IMAGE" = "--with-image-packages" ]; then
  # shellcheck disable=SC2086
  fetch $IMAGE_PKGS
fi

python3 - "$DEST" <<'EOF'
"""Strip the ray wheel in place: drop unused folders, rewrite RECORD."""
import sys
import zipfile
from pathlib import Path

DROP = ("ray/jars/", "ray/rllib/", "ray/serve/", "ray/llm/", "ray/dashboard/client/")
for whl in Path(sys.argv[1]).glob("ray-*.whl"):
    tmp = whl.with_suffix(".tmp")
    with zipfile.ZipFile(whl) as src, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as dst:
        names = [i for i in src.infolist() if not i.filename.startswith(DROP)]
        if len(names) == len(src.infolist()):
            print(f"{whl.name}: already stripped")
            tmp.unlink()
            continue
        for info in names:
            data = src.read(info)
            if info.filename.endswith(".dist-info/RECORD"):
                lines = data.decode().splitlines()
                data = ("\n".join(l for l in lines if not l.startswith(DROP)) + "\n").encode()
            dst.writestr(info, data, compress_type=zipfile.ZIP_DEFLATED, compresslevel=9)
    tmp.replace(whl)
    print(f"{whl.name}: stripped to {whl.stat().st_size / 1e6:.1f} MB")
EOF
du -sh "$DEST"
