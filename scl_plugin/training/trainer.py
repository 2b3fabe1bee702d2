"""One training loop for every method, on Hugging Face Accelerate.

The loop knows no method: a *method* is an ``nn.Module`` with
``loss(batch) -> (loss, metrics)``; a *batch source* is a callable ``(epoch, start) ->
iterable of batches`` that can start mid-epoch (so resuming never re-reads skipped data and
never consumes random numbers the uninterrupted run would not have consumed).

Accelerate handles the device, DDP, mixed precision and gradient accumulation; the loop adds
what long few-shot runs need: per-step and per-epoch atomic checkpoints with RNG states and
data position (exact resume on CPU), last-K + best-on-validation retention, a NaN guard
that stops with a debug checkpoint, tqdm progress on a terminal, and everywhere a progress line
every ``train.progress_every_s`` seconds (step, loss, steps/s, ETA) in ``train.log`` (and on
stderr when there is no terminal: logs, CI, ``nohup``), and JSONL metrics. The metric windows
being averaged are part of the checkpoint, so a resumed run logs the same rows, with the same
numbers, as the uninterrupted one.

GPU path: a step never waits for the device. Metrics are summed on the device and read back
once per ``train.log_every`` steps (the logged row is the mean over those steps); the
non-finite check is recorded on the device too and read at the same boundaries (and before
any checkpoint is written), so training stops at the log boundary after the first
non-finite loss at the latest, naming that step, with a debug checkpoint. Batches are copied
with ``non_blocking`` from pinned memory; ``train.channels_last`` and ``train.compile``
are opt-in.

Watching a run: ``train.log_with`` (``tensorboard``, ``wandb``, ``mlflow``, ...: Accelerate's
trackers) gets every row written to ``metrics.jsonl`` (step rows as ``step/<metric>``, epoch
rows as ``epoch/<metric>``, validation accuracy ``epoch/val_acc``, at the row's step) and the
run's settings as hyper-parameters. Each stage (``train``, ``distill-<g>``) logs into its own
``<stage>/tracking`` folder (TensorBoard: ``<stage>/tracking/scl_plugin``); in TensorBoard, a
call hides what earlier calls logged after the step it starts from, so each step shows once.
"""
from __future__ import annotations

import dataclasses
import json
import math
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Optional, Tuple

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs, send_to_device
from tqdm.auto import tqdm

from ..config import ConfigError, TrainConfig
from ..utils import JSONLLogger, rng_state, set_rng_state
from .checkpoint import (CheckpointError, latest_checkpoint, load_checkpoint, prune_checkpoints,
                         save_checkpoint)

BatchSource = Callable[[int, int], Iterable[Any]]


def make_accelerator(cfg: TrainConfig) -> Accelerator:
    # find_unused_parameters is set per method when it is prepared (Trainer): only a method that
    # declares it owns parameters its loss does not use pays DDP's extra graph traversal.
    return Accelerator(mixed_precision=cfg.mixed_precision, gradient_accumulation_steps=cfg.grad_accum,
                       kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=False)])


# The package each Accelerate tracker needs; setup.cfg has a pip extra of the tracker's name for each.
TRACKER_PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow", "comet_ml": "comet_ml",
                    "aim": "aim", "clearml": "clearml", "dvclive": "dvclive", "swanlab": "swanlab",
                    "trackio": "trackio"}
TRACKING_PROJECT = "scl_plugin"      # the project name given to every tracker (wandb/mlflow/comet project)


def check_trackers(cfg: TrainConfig) -> None:
    """Fail before training, in one line naming the pip extra, when a tracker of ``train.log_with``
    has no package installed (Accelerate would silently skip it)."""
    names = cfg.trackers()
    if not names:
        return
    from accelerate.tracking import get_available_trackers
    available = {str(getattr(t, "value", t)) for t in get_available_trackers()}
    for name in names:
        if name not in available:
            package = TRACKER_PACKAGES.get(name, name)
            raise ConfigError(f"config key 'train.log_with': the {name} tracker needs the {package} package, which "
                              f"is not installed: pip install 'scl_plugin[{name}]' (from a checkout: "
                              f"pip install -e '.[{name}]'), or drop {name} from train.log_with")


def hparams(config: Dict[str, Any], prefix: str = "") -> Dict[str, Any]:
    """A nested config as flat ``{dotted key: str/int/float/bool}`` (what trackers take as
    hyper-parameters): lists and mappings as JSON text, None as "none"."""
    out: Dict[str, Any] = {}
    for k, v in config.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and key != "model.kwargs":
            out.update(hparams(v, key + "."))
        elif v is None:
            out[key] = "none"
        elif isinstance(v, (bool, int, float, str)):
            out[key] = v
        else:
            out[key] = json.dumps(v, default=str)
    return out


def tracker_values(record: Dict[str, Any]) -> Dict[str, float]:
    """The numbers of a metrics.jsonl row, as tracker scalars: ``<kind>/<key>`` (``step/loss``,
    ``epoch/val_acc``); the row's step is the tracker step, not a value."""
    kind = record.get("kind", "metric")
    return {f"{kind}/{k}": v for k, v in record.items()
            if k not in ("kind", "step") and isinstance(v, (int, float)) and not isinstance(v, bool)}


def find_unused_parameters(method: torch.nn.Module) -> bool:
    """Whether ``method`` declares parameters its loss leaves unused (its class attribute or
    property ``find_unused_parameters``, default False): e.g. a projection head that a loss
    without its term keeps for a later stage. DDP then needs ``find_unused_parameters=True`` or it fails on the
    second step; every other method skips that extra traversal of the autograd graph."""
    return bool(getattr(method, "find_unused_parameters", False))


class _LossForward(torch.nn.Module):
    """Routes ``forward(batch)`` to ``method.loss(batch)`` so that DDP (which only syncs
    gradients for calls through ``forward``) sees the loss computation."""

    def __init__(self, method: torch.nn.Module):
        super().__init__()
        self.method = method

    def forward(self, batch: Any):
        return self.method.loss(batch)


class TrainingError(RuntimeError):
    """Training cannot go on; the message names the step and what to do."""


def _channels_last(batch: Any) -> Any:
    """Image tensors (4-D floating point) of a nested batch in channels-last memory format."""
    if isinstance(batch, torch.Tensor):
        return batch.contiguous(memory_format=torch.channels_last) \
            if batch.dim() == 4 and batch.is_floating_point() else batch
    if isinstance(batch, (list, tuple)):
        return type(batch)(_channels_last(b) for b in batch)
    return batch


class _DeviceMeans:
    """Sums of per-step metrics kept on the device; :meth:`read` is the only host sync."""

    def __init__(self):
        self.sums: Dict[str, torch.Tensor] = {}
        self.count = 0

    def add(self, metrics: Dict[str, Any], device: torch.device) -> None:
        for k, v in metrics.items():
            v = torch.as_tensor(v, device=device).detach().float()
            self.sums[k] = self.sums[k] + v if k in self.sums else v.clone()
        self.count += 1

    def peek(self) -> Dict[str, float]:
        """Means since the last read, without resetting (one device-to-host copy)."""
        if not self.sums or self.count == 0:
            return {}
        keys = list(self.sums)
        values = (torch.stack([self.sums[k] for k in keys]) / self.count).tolist()
        return dict(zip(keys, values))

    def read(self) -> Dict[str, float]:
        """Means since the last read (one device-to-host copy); resets."""
        means = self.peek()
        self.sums, self.count = {}, 0
        return means

    def state_dict(self) -> Dict[str, Any]:
        return {"sums": {k: v.detach().cpu().clone() for k, v in self.sums.items()}, "count": self.count}

    def load_state_dict(self, state: Optional[Dict[str, Any]], device: torch.device) -> None:
        state = state or {"sums": {}, "count": 0}
        self.sums = {k: v.to(device) for k, v in state["sums"].items()}
        self.count = int(state["count"])


def _duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s" if m else f"{s}s"


class _Progress:
    """Progress lines for logs: ``train.log`` always, stderr too when it is not a terminal (a
    tqdm bar only draws on terminals, so a job writing to a file would be silent for hours)."""

    def __init__(self, path: Path, desc: str, total: int, start: int, every_s: float, enabled: bool):
        self.path, self.desc, self.total, self.start = path, desc, total, start
        self.every, self.enabled = max(float(every_s), 0.0), enabled
        self.to_stderr = enabled and not (hasattr(sys.stderr, "isatty") and sys.stderr.isatty())
        self.t0 = self.last = time.time()

    def due(self) -> bool:
        return self.enabled and time.time() - self.last >= self.every

    def line(self, step: int, epoch: int, epochs: int, means: Dict[str, float], note: str = "") -> None:
        if not self.enabled:
            return
        now = time.time()
        rate = (step - self.start) / max(now - self.t0, 1e-9)
        eta = (self.total - step) / rate if rate > 0 else float("inf")
        metrics = "".join(f" {k} {v:.4f}" for k, v in means.items())
        text = (f"[{self.desc}] step {step}/{self.total} epoch {min(epoch + 1, epochs)}/{epochs}{metrics} | "
                f"{rate:.2f} steps/s | ETA {_duration(eta) if math.isfinite(eta) else '?'}{note}")
        self.last = now
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as f:
            f.write(time.strftime("%Y-%m-%d %H:%M:%S ") + text + "\n")
        if self.to_stderr:
            print(text, file=sys.stderr, flush=True)


class _NonFiniteGuard:
    """Remembers, on the device, the first step whose loss was not finite and that loss."""

    def __init__(self):
        self.first: Optional[torch.Tensor] = None     # [step, loss] in float64; step -1: none yet

    def update(self, loss: torch.Tensor, step: int) -> None:
        loss = loss.detach().double().reshape(())
        if self.first is None:
            self.first = torch.tensor([-1.0, 0.0], dtype=torch.float64, device=loss.device)
        take = ~torch.isfinite(loss) & (self.first[0] < 0)
        # python scalars go to the kernel as arguments: no host-to-device copy, no sync
        self.first = torch.stack([torch.where(take, float(step), self.first[0]), torch.where(take, loss, self.first[1])])

    def check(self, acc: Accelerator) -> Optional[Tuple[int, float]]:
        """``(step, loss)`` of the first non-finite step on any process, or None (a host sync)."""
        if self.first is None:
            return None
        first = self.first.view(1, 2)
        if acc.num_processes > 1:            # every rank must take the same branch
            first = acc.gather(first)
        rows = [r for r in first.tolist() if r[0] >= 0]
        if not rows:
            return None
        step, value = min(rows)
        return int(step), value


def build_optimizer(params: Iterable[torch.nn.Parameter], cfg: TrainConfig, lr: Optional[float] = None):
    lr = cfg.lr if lr is None else lr
    params = [p for p in params if p.requires_grad]
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                           nesterov=cfg.nesterov)


def lr_factor(cfg: TrainConfig, epochs: int) -> Callable[[int], float]:
    """Per-epoch LR multiplier: step decay (the papers' schedule), cosine to lr*rate^3 (authors' code), or constant."""
    if cfg.schedule == "step":
        return lambda e: cfg.lr_decay_rate ** sum(e >= m for m in cfg.lr_decay_epochs)
    if cfg.schedule == "cosine":
        floor = cfg.lr_decay_rate ** 3
        return lambda e: floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(e, epochs) / max(epochs, 1)))
    return lambda e: 1.0


@dataclass
class TrainResult:
    steps: int
    epochs_done: int
    last_checkpoint: Optional[Path]
    best_checkpoint: Optional[Path]
    finished: bool
    seconds: float


class Trainer:
    """Train ``method`` for ``epochs`` epochs of ``steps_per_epoch`` batches.

    Checkpoints live in ``ckpt_dir``: ``step-N.pt`` (last ``cfg.keep_last`` kept), ``best.pt``
    (highest validation score) and ``final.pt`` (written when training completes; its presence
    means "done", which the benchmark harness uses to skip finished methods).
    """

    def __init__(self, method: torch.nn.Module, cfg: TrainConfig, ckpt_dir: Path, *,
                 epochs: int, lr: Optional[float] = None, accelerator: Optional[Accelerator] = None,
                 validate: Optional[Callable[[torch.nn.Module], Any]] = None,
                 meta: Optional[Dict[str, Any]] = None, config: Optional[Dict[str, Any]] = None,
                 desc: str = "train", parameters: Optional[Iterable[torch.nn.Parameter]] = None,
                 on_checkpoint: Optional[Callable[[], None]] = None):
        self.cfg = cfg
        self.epochs = epochs
        self.ckpt_dir = Path(ckpt_dir)
        check_trackers(cfg)
        self.accelerator = accelerator or make_accelerator(cfg)
        self.validate = validate
        self.meta = dict(meta or {})
        self.config = config
        self.desc = desc
        optimizer = build_optimizer(method.parameters() if parameters is None else parameters, cfg, lr)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(cfg, epochs))
        self.method = method
        if cfg.channels_last:
            method.to(memory_format=torch.channels_last)
        if cfg.compile:
            self._compile(method)
        if self.accelerator.ddp_handler is None:
            self.accelerator.ddp_handler = DistributedDataParallelKwargs()
        self.accelerator.ddp_handler.find_unused_parameters = find_unused_parameters(method)
        self.model, self.optimizer = self.accelerator.prepare(_LossForward(method), optimizer)
        self.logger = JSONLLogger(self.ckpt_dir / "metrics.jsonl", enabled=self.accelerator.is_main_process)
        self.epoch, self.batch_in_epoch, self.step = 0, 0, 0
        self.best_score = -math.inf
        self._batches: Any = None
        self.on_checkpoint = on_checkpoint      # called after every checkpoint written (the run's clock)
        self._window, self._epoch_means = _DeviceMeans(), _DeviceMeans()
        self._tracking: Optional[Tuple[Any, Any]] = None

    # ------------------------------------------------------------------ metrics and trackers
    @property
    def tracking_dir(self) -> Path:
        return self.ckpt_dir / "tracking"

    def _log(self, **record: Any) -> None:
        """One metrics row: to ``metrics.jsonl`` and, with ``train.log_with``, to the trackers
        (main process only, both)."""
        self.logger.log(**record)
        if self._tracking is not None:
            self.accelerator.log(tracker_values(record), step=int(record["step"]))

    def _start_tracking(self) -> None:
        """Start this stage's trackers on the accelerator (Accelerate's ``init_trackers``), with the
        run's settings as hyper-parameters. The accelerator may be shared by stages and runs (a
        suite): its ``log_with`` and logging folder are this stage's until :meth:`_end_tracking`."""
        names = self.cfg.trackers()
        if not names:
            return
        from accelerate.tracking import filter_trackers
        acc = self.accelerator
        self._tracking = (acc.log_with, acc.project_configuration.logging_dir)
        acc.project_configuration.logging_dir = str(self.tracking_dir)
        acc.log_with = filter_trackers(names, acc.logging_dir)
        acc.trackers = []
        label = f"{self.ckpt_dir.parent.name}/{self.ckpt_dir.name}"
        # TensorBoard hides what an earlier call logged after the step this one starts from (an
        # interrupted call's steps past its last checkpoint, a call that failed before its first one)
        init_kwargs: Dict[str, Dict[str, Any]] = {"wandb": {"name": label}, "mlflow": {"run_name": label},
                                                  "tensorboard": {"purge_step": self.step + 1}}
        settings = self.config if self.config is not None else {"train": dataclasses.asdict(self.cfg)}
        try:
            acc.init_trackers(TRACKING_PROJECT, config=hparams(settings), init_kwargs=init_kwargs)
        except BaseException:
            self._end_tracking()
            raise

    def _end_tracking(self) -> None:
        """Finish this stage's trackers (flush and close). Not ``accelerator.end_training()``: that
        also destroys the process group, which later stages, the final buffer broadcast and the
        next runs of a suite still use."""
        if self._tracking is None:
            return
        acc = self.accelerator
        try:
            for tracker in acc.trackers:
                tracker.finish()
        finally:
            acc.trackers = []
            acc.log_with, acc.project_configuration.logging_dir = self._tracking
            self._tracking = None

    def _compile(self, method: torch.nn.Module) -> None:
        """``torch.compile`` the backbone's ``forward_spatial`` (what every loss and ``forward`` call),
        as an instance attribute: parameter names, hence checkpoints, are unchanged."""
        backbone = getattr(method, "backbone", None)
        reason = "it has no backbone" if backbone is None else getattr(method, "compile_unsupported", None)
        if reason:
            raise TrainingError(f"{self.desc}: train.compile=true works for methods with a plain backbone, "
                                f"not {type(method).__name__} ({reason}); set train.compile=false")
        backbone.forward_spatial = torch.compile(backbone.forward_spatial)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> Dict[str, Any]:
        acc = self.accelerator
        return {
            "model": self.method.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": acc.scaler.state_dict() if acc.scaler is not None else None,
            "rng": rng_state(),
            "position": {"epoch": self.epoch, "batch": self.batch_in_epoch, "step": self.step},
            "best_score": self.best_score,
            "batches": self._batches.state_dict() if hasattr(self._batches, "state_dict") else None,
            "metric_windows": {"log": self._window.state_dict(), "epoch": self._epoch_means.state_dict()},
            "meta": self.meta,
            "config": self.config,
        }

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        try:
            self.method.load_state_dict(state["model"])
        except RuntimeError as e:
            raise CheckpointError(f"checkpoint does not fit this model ({str(e).splitlines()[0]}); "
                                  f"wrong backbone or class count?") from None
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler") is not None and self.accelerator.scaler is not None:
            self.accelerator.scaler.load_state_dict(state["scaler"])
        pos = state["position"]
        self.epoch, self.batch_in_epoch, self.step = pos["epoch"], pos["batch"], pos["step"]
        self.best_score = state.get("best_score", -math.inf)
        if state.get("batches") is not None and hasattr(self._batches, "load_state_dict"):
            self._batches.load_state_dict(state["batches"])
        windows = state.get("metric_windows") or {}
        self._window.load_state_dict(windows.get("log"), self.accelerator.device)
        self._epoch_means.load_state_dict(windows.get("epoch"), self.accelerator.device)
        set_rng_state(state["rng"])

    def resume(self, path: Optional[Path] = None) -> bool:
        """Resume from ``path`` or the newest step checkpoint in ``ckpt_dir``; False if none."""
        path = path or latest_checkpoint(self.ckpt_dir)
        if path is None:
            return False
        self.load_state_dict(load_checkpoint(path, expect=self.meta))
        if self.accelerator.is_main_process:
            self.logger.truncate_after(self.step)     # steps past the checkpoint are logged again
        return True

    def _clear_previous_run(self) -> None:
        """``resume=False``: remove the old run's checkpoints and metrics so that nothing of it
        is pruned into, resumed from, or mistaken for a finished run later."""
        if self.accelerator.is_main_process and self.ckpt_dir.is_dir():
            for p in [*self.ckpt_dir.glob("step-*.pt"), self.ckpt_dir / "best.pt", self.ckpt_dir / "final.pt",
                      self.ckpt_dir / "metrics.jsonl", self.ckpt_dir / "train.log"]:
                p.unlink(missing_ok=True)
            shutil.rmtree(self.tracking_dir, ignore_errors=True)
        self.accelerator.wait_for_everyone()

    def finalize(self) -> Optional[Path]:
        """Mark training complete (writes ``final.pt``), e.g. when a step budget ends mid-epoch."""
        return self._save("final.pt")

    def _save(self, name: str) -> Optional[Path]:
        """Rank 0 writes (atomically); every rank waits before and *after* the write, so no
        process reads a checkpoint (final.pt, best.pt, a parent's weights) before it is complete."""
        acc = self.accelerator
        acc.wait_for_everyone()
        path = None
        if acc.is_main_process:
            path = save_checkpoint(self.ckpt_dir / name, self.state_dict())
            if name.startswith("step-"):
                prune_checkpoints(self.ckpt_dir, self.cfg.keep_last)
            if self.on_checkpoint is not None:
                self.on_checkpoint()
        acc.wait_for_everyone()
        return path

    def _stop_if_nonfinite(self, guard: _NonFiniteGuard) -> None:
        bad = guard.check(self.accelerator)
        if bad is not None:
            step, value = bad
            debug = self._save(f"debug-nonfinite-step-{step}.pt")
            raise TrainingError(f"{self.desc}: loss is {value} at step {step} (stopped at step {self.step}, "
                                f"epoch {self.epoch}); debug checkpoint: {debug}; lower train.lr or check the data")

    # ------------------------------------------------------------------ loop
    def fit(self, batches: BatchSource, steps_per_epoch: int, resume: bool = True) -> TrainResult:
        cfg, acc = self.cfg, self.accelerator
        if cfg.steps_per_epoch > 0:
            steps_per_epoch = min(steps_per_epoch, cfg.steps_per_epoch)
        if steps_per_epoch < 1:
            raise TrainingError(f"{self.desc}: an epoch has no batches (dataset smaller than one batch?); "
                                f"lower data.batch_size")
        self._batches = batches
        if resume:
            self.resume()
        else:
            self._clear_previous_run()
        self._start_tracking()
        try:
            return self._fit(batches, steps_per_epoch)
        finally:               # also on a failure or an interruption: what was logged is flushed
            self._end_tracking()

    def _fit(self, batches: BatchSource, steps_per_epoch: int) -> TrainResult:
        cfg, acc = self.cfg, self.accelerator
        start_time, last = time.time(), None
        stopped = 0 < cfg.max_steps <= self.step      # a resumed run already at its step budget
        bar = tqdm(total=self.epochs * steps_per_epoch, initial=self.epoch * steps_per_epoch + self.batch_in_epoch,
                   desc=self.desc, dynamic_ncols=True, mininterval=1.0,
                   disable=None if acc.is_local_main_process else True)   # None: off when not a TTY
        self.method.train()
        guard, window, epoch_means = _NonFiniteGuard(), self._window, self._epoch_means
        non_blocking = acc.device.type == "cuda"
        first_step = self.step
        log_every = max(cfg.log_every, 1)
        total = self.epochs * steps_per_epoch
        progress = _Progress(self.ckpt_dir / "train.log", self.desc, total, self.step, cfg.progress_every_s,
                             acc.is_main_process)
        progress.line(self.step, self.epoch, self.epochs, {}, note=" (resumed)" if self.step else " (start)")
        while self.epoch < self.epochs and not stopped:
            for batch in batches(self.epoch, self.batch_in_epoch):
                if self.batch_in_epoch >= steps_per_epoch:
                    break
                batch = send_to_device(batch, acc.device, non_blocking=non_blocking)
                if cfg.channels_last:
                    batch = _channels_last(batch)
                with acc.accumulate(self.model):
                    try:
                        loss, metrics = self.model(batch)
                    except Exception as e:
                        if cfg.compile and self.step == first_step:
                            raise TrainingError(f"{self.desc}: train.compile=true failed on the first step "
                                                f"({type(e).__name__}: {str(e).strip().splitlines()[0][:200]}); "
                                                f"set train.compile=false") from e
                        raise
                    guard.update(loss, self.step)
                    acc.backward(loss)
                    self.optimizer.step()
                    self.optimizer.zero_grad(set_to_none=True)
                self.batch_in_epoch += 1
                self.step += 1
                window.add(metrics, acc.device)
                epoch_means.add(metrics, acc.device)
                bar.update(1)
                save = cfg.save_every > 0 and self.step % cfg.save_every == 0
                stopped = 0 < cfg.max_steps <= self.step
                if self.step % log_every == 0 or save or stopped:
                    self._stop_if_nonfinite(guard)
                if self.step % log_every == 0:
                    means = window.read()
                    bar.set_postfix({k: f"{v:.3f}" for k, v in means.items()})
                    self._log(kind="step", step=self.step, epoch=self.epoch,
                              lr=self.optimizer.param_groups[0]["lr"], **means)
                    if progress.due():
                        progress.line(self.step, self.epoch, self.epochs, means)
                elif progress.due():
                    progress.line(self.step, self.epoch, self.epochs, window.peek())
                if save:
                    last = self._save(f"step-{self.step}.pt")
                if stopped:
                    break
            self._stop_if_nonfinite(guard)
            if self.batch_in_epoch >= steps_per_epoch:     # epoch complete
                self.epoch += 1
                self.batch_in_epoch = 0
                self.scheduler.step()
                record = epoch_means.read()
                if self.validate is not None and cfg.validate:
                    result = self.validate(self.method)   # a float, or {"val_acc": ..., other val_* entries}
                    extra = dict(result) if isinstance(result, dict) else {"val_acc": result}
                    score = float(extra.pop("val_acc"))
                    if acc.num_processes > 1:            # decide "best" on rank 0's score everywhere
                        from accelerate.utils import broadcast_object_list
                        score = broadcast_object_list([score])[0]
                    self.method.train()
                    record["val_acc"] = score
                    record.update({k: float(v) for k, v in extra.items()})
                    if score > self.best_score:
                        self.best_score = score
                        self._save("best.pt")
                self._log(kind="epoch", epoch=self.epoch, step=self.step, **record)
            last = self._save(f"step-{self.step}.pt")
        bar.close()
        finished = self.epoch >= self.epochs
        progress.line(self.step, self.epoch, self.epochs, {},
                      note=" (finished)" if finished else " (paused: train.max_steps)")
        if finished:
            last = self._save("final.pt")
        best = self.ckpt_dir / "best.pt"
        return TrainResult(self.step, self.epoch, last, best if best.exists() else None, finished,
                           time.time() - start_time)
