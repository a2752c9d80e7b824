"""How long the LM data path takes on a large corpus (issue 22): training the BPE tokenizer
on a sample of train, then encoding every split into the token cache, with a fresh cache,
and the same again from the cache.

It runs the steps of ``cosearch.data.build_task_data`` (what ``cosearch train --task lm``
runs) one by one, to time each, then calls ``build_task_data`` itself, which must find
everything in the cache. Wall times on a shared machine say little about another one, so it
also records CPU seconds: of the whole process and of the main thread. sentencepiece's batch
encoder works in its own threads with the GIL released, so during encoding the main
thread's CPU (converting ids, writing) and the reader thread's (decompressing and decoding
the next chunk: timed alone in one more pass) are serial and the rest scales with the
cores. The estimate for ``--cores`` cores: the tokenizer phase's CPU seconds (taken as
serial) + the encoding's main-thread CPU + the reading pass's CPU + the remaining encoding
CPU divided by the cores (no credit for reading and encoding overlapping: on the safe side).

    python3 benchmarks/lm_data_speed.py --data ../shared/data/linux-c --out benchmarks/results/lm_data_speed_2cpu.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


class Clock:
    """Wall, process CPU and main-thread CPU seconds of a block."""

    def __enter__(self):
        self.t = (time.perf_counter(), time.process_time(), time.thread_time())
        return self

    def __exit__(self, *exc):
        now = (time.perf_counter(), time.process_time(), time.thread_time())
        self.wall, self.cpu, self.main_cpu = (b - a for a, b in zip(self.t, now))

    def as_dict(self) -> dict:
        return {"wall_s": round(self.wall, 2), "cpu_s": round(self.cpu, 2), "main_thread_cpu_s": round(self.main_cpu, 2)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="a folder with train/valid/test (.txt.xz) files")
    ap.add_argument("--vocab", type=int, default=8192, help="vocabulary (the code_lm space's)")
    ap.add_argument("--cores", type=int, default=16, help="the machine to extrapolate to")
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)

    import numpy as np

    from cosearch.data import build_task_data
    from cosearch.data.lm_text import lm_sources
    from cosearch.data.tasks import LM_BPE_LINES, encode_threads, training_lines
    from cosearch.data.token_cache import encoded
    from cosearch.data.tokenizer import TokenizerSettings, train_or_load_streamed
    from cosearch.threads import usable_cores

    load0 = os.getloadavg()[0]
    threads = encode_threads()
    with tempfile.TemporaryDirectory(prefix="lm_data_speed_") as tmp:
        cache = Path(tmp) / "tokenizers"  # build_task_data's default cache for workdir=tmp
        sources = lm_sources(a.data)
        settings = replace(TokenizerSettings(vocab_size=a.vocab, keep_whitespace=True, model="bpe"),
                           max_sentences=LM_BPE_LINES)
        with Clock() as c_tok:
            tok = train_or_load_streamed(training_lines(sources.train, settings.max_sentences), sources.train.digest(),
                                         settings, cache)
        clocks, ids = {}, {}
        for name in ("train", "valid", "test"):
            src = getattr(sources, name)
            if src is not None:
                with Clock() as clocks[name]:
                    ids[name] = encoded(tok, src, cache, threads=threads)
        with Clock() as c_hit:
            td = build_task_data("lm", a.data, a.vocab, tmp, max_len=512, tokenizer="bpe")
        assert td.tokenizer.to_bytes() == tok.to_bytes() and all(
            np.array_equal(td.split(k), v) for k, v in ids.items()), "build_task_data missed the cache"
        mb = {k: os.path.getsize(v.filename) / 2 for k, v in ids.items()}  # tokens (uint16)
        with Clock() as c_read:  # what the reader thread did while encoding
            for name in ids:
                for _ in getattr(sources, name).chunks():
                    pass
        text_mb = sum(len(c.encode()) for c in sources.valid.chunks()) / 1e6
    enc_main = sum(c.main_cpu for c in clocks.values())
    enc_par = max(0.0, sum(c.cpu - c.main_cpu for c in clocks.values()) - c_read.cpu)
    serial = c_tok.cpu + enc_main + c_read.cpu
    est = serial + enc_par / a.cores
    res = {"benchmark": "lm data path (build_task_data steps, --tokenizer bpe, fresh cache)", "data": str(a.data),
           "vocab": a.vocab, "encode_threads": threads,
           "machine": {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count(),
                       "usable_cores": usable_cores(), "load_average_at_start": load0,
                       "load_average_at_end": os.getloadavg()[0]},
           "tokenizer": c_tok.as_dict(), "encode": {k: c.as_dict() for k, c in clocks.items()},
           "read_only": c_read.as_dict(), "cache_hit": c_hit.as_dict(), "tokens": {k: int(v) for k, v in mb.items()},
           "valid_text_mb": text_mb, "vocab_size": tok.vocab_size,
           "total_wall_s": round(c_tok.wall + sum(c.wall for c in clocks.values()), 1),
           "estimate": {"cores": a.cores, "seconds": round(est, 1), "serial_cpu_s": round(serial, 1),
                        "parallel_cpu_s": round(enc_par, 1),
                        "how": "tokenizer CPU + encoding main-thread CPU + reading CPU (serial) + other encoding CPU / cores"}}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
