"""Small shared helpers: seeding, run directories, JSONL metrics, atomic file writes."""
from __future__ import annotations

import contextlib
import json
import os
import random
import re
import tempfile
from pathlib import Path
from typing import Any, Dict, Iterator, Optional, Union

import numpy as np
import torch

PathLike = Union[str, os.PathLike]


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed python, numpy and torch (all devices); optionally force deterministic kernels.

    DataLoader workers are seeded by :func:`worker_init_fn` from torch's per-worker seed.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False


def worker_init_fn(worker_id: int) -> None:
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


def rng_state() -> Dict[str, Any]:
    """This process's RNG states as tensors and plain data (checkpoints load with ``weights_only``)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    numpy_state = {"kind": kind, "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
                   "has_gauss": int(has_gauss), "cached_gaussian": float(gauss)}
    state = {"python": random.getstate(), "numpy": numpy_state, "torch": torch.get_rng_state()}
    if torch.cuda.is_available():      # this process's device only: resumable on any GPU count
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    random.setstate(state["python"])
    n = state["numpy"]
    if isinstance(n, dict):
        keys = np.asarray(n["keys"].numpy() if isinstance(n["keys"], torch.Tensor) else n["keys"], dtype=np.uint32)
        n = (n["kind"], keys, n["pos"], n["has_gauss"], n["cached_gaussian"])
    np.random.set_state(n)
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        cuda = state["cuda"]
        torch.cuda.set_rng_state(cuda[0] if isinstance(cuda, (list, tuple)) else cuda)


_REFUSED_GLOBAL = re.compile(r"GLOBAL (\S+?)(?: was not an allowed global| whose module)")


def refused_global(error: BaseException) -> Optional[str]:
    """The global (``posix.system``, ``builtins.exec``) whose use made ``torch.load(weights_only=True)``
    refuse a file, read from torch's message; None when the error is not such a refusal."""
    m = _REFUSED_GLOBAL.search(re.sub(r"\x1b\[[0-9;]*m", "", str(error)))
    if m is None:
        return None
    return m.group(1) if "." in m.group(1) else f"builtins.{m.group(1)}"    # torch omits builtins' module


@contextlib.contextmanager
def atomic_open(path: PathLike, mode: str = "w") -> Iterator[Any]:
    """Write to a temp file in the same folder, fsync, then rename over ``path``.

    If anything fails (including a full disk) the temp file is removed and ``path`` keeps
    its previous content: a reader never sees a partial file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())     # mkstemp creates 0600; give the user's usual mode
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


class RunDirError(OSError):
    """A run directory (or another output folder) that cannot be created or written."""


def make_run_dir(path: PathLike) -> Path:
    """Create ``path`` (and parents); one clear error when it cannot be created or written."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RunDirError(f"cannot create {path.resolve()}: {e.strerror or e}; choose a writable run_dir") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise RunDirError(f"cannot write in {path.resolve()}: permission denied; choose a writable run_dir")
    return path


def atomic_write_text(path: PathLike, text: str) -> None:
    with atomic_open(path, "w") as f:
        f.write(text)


def atomic_write_json(path: PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, default=_json_default) + "\n")


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, torch.Tensor):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


class JSONLLogger:
    """Appends one JSON object per line to ``metrics.jsonl`` in the run directory."""

    def __init__(self, path: PathLike, enabled: bool = True):
        self.path = Path(path)
        self.enabled = enabled
        if enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def truncate_after(self, step: int) -> None:
        """Drop records of steps after ``step`` (a resumed run redoes them: each step once)."""
        if not self.enabled or not self.path.exists():
            return
        lines = self.path.read_text().splitlines()
        keep = [l for l in lines if l.strip() and json.loads(l).get("step", 0) <= step]
        if len(keep) != len(lines):
            atomic_write_text(self.path, "".join(l + "\n" for l in keep))

    def log(self, **record: Any) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(record, default=_json_default) + "\n")


@contextlib.contextmanager
def torch_threads(n: Optional[int]) -> Iterator[None]:
    """Temporarily set torch's intra-op thread count (None: leave it alone).

    For loops of tiny ops (the logistic-regression solver, per-image augmentations): with
    2+ OpenMP threads each op waits for every thread, and when another process holds a core
    such loops measured 4-60x slower (the solver: 10 s instead of 0.17 s for 1,000
    episodes; an affine augmentation of a 28x28 image: 1.2 ms instead of 0.26 ms). One
    thread loses little when the machine is idle and gives the same values.
    """
    old = torch.get_num_threads()
    if n is not None and n != old:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if torch.get_num_threads() != old:
            torch.set_num_threads(old)


def expand(path: Optional[PathLike]) -> Optional[Path]:
    return None if path is None else Path(os.path.expandvars(os.path.expanduser(str(path))))


def save_figure(fig: Any, path: PathLike, dpi: int = 100) -> PathLike:
    """Write a matplotlib figure to ``path`` atomically (format from the suffix, parent folders
    created: an interrupted write never leaves half an image) and close it."""
    import io
    import matplotlib.pyplot as plt
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    buf = io.BytesIO()
    fig.savefig(buf, format=os.path.splitext(str(path))[1].lstrip(".") or "png", dpi=dpi)
    plt.close(fig)
    with atomic_open(path, "wb") as f:
        f.write(buf.getvalue())
    return path
