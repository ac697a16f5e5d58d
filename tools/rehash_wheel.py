"""Record the kernel library's SHA-256 again in repaired wheels (cibuildwheel's repair step).

auditwheel and delocate rewrite the extension modules they repair (RPATH, bundled libraries), so
the hash setup.py recorded at link time no longer matches; spocu.torch._cpp would refuse the
library. This rewrites ``<library>.sha256`` inside each wheel in the given directory and
updates the wheel's RECORD, with the ``wheel`` package's own unpack/pack.

    python tools/rehash_wheel.py DIST_DIR
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
from pathlib import Path


def rehash(wheel: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "wheel", "unpack", "-d", tmp, str(wheel)], check=True)
        (root,) = Path(tmp).iterdir()
        records = list(root.glob("spocu/torch/_kernels*.sha256"))
        for record in records:
            library = record.with_name(record.name.removesuffix(".sha256"))
            record.write_text(hashlib.sha256(library.read_bytes()).hexdigest() + "\n", encoding="ascii")
        if records:
            subprocess.run([sys.executable, "-m", "wheel", "pack", "-d", str(wheel.parent), str(root)], check=True)


if __name__ == "__main__":
    for path in sorted(Path(sys.argv[1]).glob("spocu-*.whl")):
        rehash(path)
