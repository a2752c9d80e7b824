"""The README's fit example: the same co-search on two weight buffers, best design under a bound.

Runs what the README shows, through the CLI: ``cosearch search`` (tiny_lm, synthetic
quality, decode on a ZCU102, random sampler: both runs propose the very same designs, so
only the cost differs) once with the preset's weight buffer and once with a copy of the
preset whose buffer is larger; takes the best-quality design within the latency bound of
each (``cosearch export --pick best-quality --latency-max``'s choice) and costs each pick
on both buffers with ``cosearch cost`` to show why it changed: on the small buffer the big
pick's weights stream from DRAM every decode step.

    python benchmarks/hw_fit_example.py            # -> benchmarks/results/hw_fit_example.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from cosearch.export.pick import pick_trial  # noqa: E402

#: the preset's weight-buffer line (the memory section's; codesign lists its choices in brackets)
WEIGHT_KB_LINE = re.compile(r"^(  weight_kb: )\d+", flags=re.M)


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "cosearch.cli", *args]


def run(argv: list[str]) -> str:
    # this checkout's cosearch, whatever is installed
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    return subprocess.run(argv, check=True, capture_output=True, text=True, env=env).stdout


def variant(preset: str, weight_kb: int, out: Path) -> str:
    """The preset itself, or a copy with another weight buffer (the README does this with sed)."""
    given = (REPO / "hw_models" / f"{preset}.yaml").read_text()
    text, n = WEIGHT_KB_LINE.subn(rf"\g<1>{weight_kb}", given, count=1)
    if n != 1:
        raise SystemExit(f"hw_models/{preset}.yaml has no '  weight_kb: N' line")
    if text == given:
        return preset
    path = out / f"{preset}_wbuf{weight_kb}kb.yaml"
    path.write_text(text)
    return str(path)


def search_argv(space: str, hw: str, latency_max: float, trials: int, seed: int, out: Path) -> list[str]:
    return cli("search", "--space", space, "--synthetic-quality", "--hw", hw, "--latency-max", str(latency_max),
               "--trials", str(trials), "--sampler", "random", "--seed", str(seed), "--out", str(out), "--no-progress")


def decode_cost(space: str, hw: str, arch_file: Path) -> dict:
    d = json.loads(run(cli("cost", "--space", space, "--hw", hw, "--arch", str(arch_file),
                           "--scenario", "decode", "--json")))
    return {k: d[k] for k in ("latency_ms", "energy_mj", "dram_bytes", "size_bytes")}


def fit_example(out: Path, space="tiny_lm", preset="zcu102", buffers=(1024, 2048), latency_max=1.0,
                trials=300, seed=0) -> dict:
    """Search on each buffer, pick, cost every pick on every buffer."""
    hws = {kb: variant(preset, kb, out) for kb in buffers}
    picks, commands = {}, []
    for kb, hw in hws.items():
        argv = search_argv(space, hw, latency_max, trials, seed, out / f"search_{kb}")
        commands.append(" ".join(["cosearch", *argv[3:]]).replace(f"{out}{os.sep}", ""))
        run(argv)
        t = pick_trial(out / f"search_{kb}", pick="best-quality", latency_max=latency_max)
        arch_file = out / f"pick_{kb}.json"
        arch_file.write_text(json.dumps(t.arch))
        m = t.metrics
        picks[kb] = {"trial": t.number, "digest": m["digest"], "loss": m["loss"], "layers": m["layers"],
                     "weight_bits": str(m["weight_bits"]), "act_bits": str(m["act_bits"]),
                     "weight_mb": m["size_bytes"] / 1e6, "latency_ms": m["latency_ms"], "energy_mj": m["energy_mj"],
                     "dram_mb": m["dram_bytes"] / 1e6, "arch": t.arch,
                     # why: the same design on every buffer of the example
                     "on_buffer": {str(b): decode_cost(space, h, arch_file) for b, h in hws.items()}}
    return {"space": space, "hw": preset, "weight_kb": list(buffers), "latency_max_ms": latency_max,
            "trials": trials, "seed": seed, "sampler": "random", "quality": "synthetic", "scenario": "decode",
            "commands": commands, "picks": {str(k): v for k, v in picks.items()}}


def machine() -> dict:
    import numpy as np
    import optuna
    return {"machine": platform.machine(), "cores": os.cpu_count(), "python": platform.python_version(),
            "numpy": np.__version__, "optuna": optuna.__version__}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--space", default="tiny_lm")
    p.add_argument("--hw", default="zcu102", help="preset under hw_models/")
    p.add_argument("--buffers", default="1024,2048", help="weight_kb of the two runs")
    p.add_argument("--latency-max", type=float, default=1.0)
    p.add_argument("--trials", type=int, default=300)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, help="folder for the searches (default: a temporary one)")
    p.add_argument("--json", type=Path, default=REPO / "benchmarks" / "results" / "hw_fit_example.json")
    a = p.parse_args(argv)
    buffers = tuple(int(b) for b in a.buffers.split(","))
    with tempfile.TemporaryDirectory() as tmp:
        out = a.out or Path(tmp)
        out.mkdir(parents=True, exist_ok=True)
        res = fit_example(out, a.space, a.hw, buffers, a.latency_max, a.trials, a.seed)
    res["machine"] = machine()
    a.json.parent.mkdir(parents=True, exist_ok=True)
    a.json.write_text(json.dumps(res, indent=2) + "\n")
    for kb, pk in res["picks"].items():
        print(f"weight buffer {kb} KB: trial {pk['trial']} loss {pk['loss']:.3f}, {pk['weight_mb']:.3f} MB, "
              f"{pk['latency_ms']:.3f} ms, {pk['energy_mj']:.2f} mJ, DRAM {pk['dram_mb']:.1f} MB; on each buffer: "
              + ", ".join(f"{b} KB {c['latency_ms']:.3f} ms" for b, c in pk["on_buffer"].items()))
    return res


if __name__ == "__main__":
    main()
