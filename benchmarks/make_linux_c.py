"""Rebuild the linux-c corpus (../shared/data/linux-c) from the Linux 6.1 sources, or check a
rebuild against it.

The corpus is the C sources and headers (``*.c``, ``*.h``; files over 256 KB, generated
tables, left out) of Debian's ``linux-source-6.1`` package (6.1.192-3, GPL-2.0), split by
directory so that valid and test code is never seen in training. Each file is a line
``// file: PATH``, its text, and a blank line; the folders come in the order below, and
within a folder its own files (sorted) before its subfolders (sorted, recursively).

    apt-get download linux-source-6.1 && dpkg -x linux-source-6.1_*.deb pkg
    tar xf pkg/usr/src/linux-source-6.1.tar.xz
    python3 benchmarks/make_linux_c.py linux-source-6.1 --out linux-c          # writes *.txt.xz
    python3 benchmarks/make_linux_c.py linux-source-6.1 --check ../shared/data/linux-c  # same file lists?
"""
from __future__ import annotations

import argparse
import lzma
import os
import sys
from pathlib import Path

SPLITS = {
    "train": ["kernel", "lib", "fs", "net", "security", "io_uring", "virt", "arch/x86", "arch/arm64", "arch/riscv",
              "include/linux", "include/net", "include/uapi", "drivers/usb", "drivers/scsi",
              "drivers/net/ethernet/intel", "drivers/net/wireless/intel", "drivers/tty", "drivers/pci",
              "drivers/input", "drivers/i2c", "drivers/spi", "drivers/md", "drivers/block", "sound/core",
              "sound/pci/hda", "drivers/acpi", "drivers/base", "drivers/char", "drivers/hid"],
    "valid": ["block", "ipc", "init"],
    "test": ["mm"],
}
MAX_BYTES = 256 * 1024


def files_of(src: Path, folders: list[str]) -> list[str]:
    """Relative paths of the kept files, in corpus order."""
    out = []
    for folder in folders:
        for root, dirs, names in os.walk(src / folder):
            dirs.sort()
            for n in sorted(names):
                p = Path(root) / n
                if n.endswith((".c", ".h")) and p.is_file() and p.stat().st_size <= MAX_BYTES:
                    out.append(p.relative_to(src).as_posix())
    return out


def corpus_paths(path: Path) -> list[str]:
    with lzma.open(path, "rt", encoding="utf-8") as f:
        return [line[len("// file: "):].rstrip("\n") for line in f if line.startswith("// file: ")]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("src", help="the unpacked linux-source-6.1 tree")
    ap.add_argument("--out", help="write train/valid/test.txt.xz here")
    ap.add_argument("--check", help="compare the file lists with this corpus folder")
    a = ap.parse_args(argv)
    src = Path(a.src)
    if not (src / "kernel").is_dir():
        sys.exit(f"{src} is not a Linux source tree (no kernel/ folder)")
    for split, folders in SPLITS.items():
        paths = files_of(src, folders)
        if a.check:
            have = corpus_paths(Path(a.check) / f"{split}.txt.xz")
            print(f"{split}: {len(paths)} files here, {len(have)} in the corpus, "
                  f"{'the same list' if paths == have else 'DIFFERENT lists'}")
        if a.out:
            Path(a.out).mkdir(parents=True, exist_ok=True)
            with lzma.open(Path(a.out) / f"{split}.txt.xz", "wt", encoding="utf-8", preset=9) as f:
                for p in paths:
                    text = (src / p).read_text(encoding="utf-8", errors="replace")
                    f.write(f"// file: {p}\n{text}{'' if text.endswith(chr(10)) else chr(10)}\n")
            print(f"{split}: {len(paths)} files -> {Path(a.out) / f'{split}.txt.xz'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
