"""Command-line entry points: ``scl-train``, ``scl-eval``, ``scl-bench``.

Each takes a YAML file and ``key=value`` overrides. Known failures (bad config, missing
data, unusable checkpoint, diverged training) print one line ``error: <cause and fix>`` and
exit with a non-zero code instead of a traceback.
"""
from __future__ import annotations

import argparse
import sys
from typing import Callable, List, Optional

EXIT_CONFIG, EXIT_RUNTIME = 2, 1


def _known_errors():
    from .bench import SuiteFailed
    from .config import ConfigError
    from .data import DataError
    from .training import CheckpointError, TrainingError
    return (ConfigError, DataError, CheckpointError, TrainingError, SuiteFailed, OSError)


def _bad_input():
    """Errors that are the user's input (config, data, paths, permissions): exit code 2."""
    from .config import ConfigError
    from .data import DataError
    from .training.checkpoint import UnsafeCheckpointError
    from .utils import RunDirError
    return (ConfigError, DataError, RunDirError, UnsafeCheckpointError, PermissionError, FileNotFoundError,
            IsADirectoryError, NotADirectoryError)


def _one_line(e: BaseException) -> str:
    text = str(e)
    if "Original Traceback" in text:        # re-raised from a DataLoader worker: keep the worker's own line
        last = [l.strip() for l in text.splitlines() if l.strip()][-1]
        return last.split(": ", 1)[1] if last.split(": ", 1)[0].endswith("Error") else last
    if isinstance(e, OSError) and e.filename is not None and not str(e).startswith("cannot"):
        return f"cannot use {e.filename}: {e.strerror or e}; check the path and its permissions"
    return " ".join(str(e).split("\n")).strip()


def _run(fn: Callable[[argparse.Namespace], None], args: argparse.Namespace) -> int:
    """Run a command: 0 on success, 2 for bad input, 1 for a run that failed; one line on error."""
    try:
        fn(args)
    except KeyboardInterrupt:
        print("interrupted: checkpoints so far are kept; rerun the same command to resume", file=sys.stderr)
        return 130
    except _known_errors() as e:
        print(f"error: {_one_line(e)}", file=sys.stderr)
        return EXIT_CONFIG if isinstance(e, _bad_input()) else EXIT_RUNTIME
    return 0


class _Parser(argparse.ArgumentParser):
    """Says in one line which input is missing instead of argparse's 'required: ..., key=value'."""
    missing = ""

    def error(self, message: str):
        if self.missing and message.startswith("the following arguments are required"):
            self.exit(EXIT_CONFIG, f"error: {self.missing}\n")
        super().error(message)


EPILOGS = {
    "scl-train": "Overrides use dotted config keys, e.g. train.epochs=5 data.shots=5 model.name=resnet12 "
                 "(every key: add --print-config). See configs/ and scl_plugin/config.py.",
    "scl-eval": "Overrides on a run: eval.* and data.* test-episode settings only, e.g. "
                "eval.classifier=proto_cosine data.shots=5 data.test_episodes=1000 (the weights keep "
                "the settings they were trained with; train another run to change those). With "
                "--weights, RUN_DIR is a config YAML and overrides are any of its keys, e.g. "
                "data.root=~/data/mini-imagenet eval.protocol=scl.",
    "scl-bench": "Overrides naming a suite key change the suite, e.g. test_episodes=100 queries=15; any "
                 "other key applies to every run of the suite, e.g. data.root=~/data/mini-imagenet "
                 "train.epochs=2. See configs/suites/.",
}
MISSING = {"config": "give a config file, e.g. scl-train configs/scl.yaml [key=value ...]",
           "run_dir": "give a run directory written by scl-train, e.g. scl-eval runs/scl [key=value ...] "
                      "(or a config with --weights FILE)",
           "suite": "give a suite file, e.g. scl-bench configs/suites/default.yaml [key=value ...]"}


def _parser(prog: str, description: str, target: str) -> argparse.ArgumentParser:
    p = _Parser(prog=prog, description=description, epilog=EPILOGS[prog])
    p.missing = MISSING[target]
    helps = {"config": "YAML config file (see configs/)", "run_dir": "a run directory written by scl-train",
             "suite": "suite YAML (see configs/suites/)"}
    p.add_argument(target, help=helps[target])
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    return p


# ----------------------------------------------------------------------------- train
def _train(args: argparse.Namespace) -> None:
    from . import pipeline
    from .config import load_config
    cfg = load_config(args.config, args.overrides)
    if args.print_config:
        from .config import to_yaml
        print(to_yaml(cfg), end="")
        return
    resume = not (args.no_resume or args.restart)
    reused = resume and pipeline.is_done(cfg)        # finished before this call: train only loads it
    pipeline.train(cfg, resume=resume)
    if reused:
        print(f"{cfg.method}: finished run reused from {cfg.run_dir} (nothing trained; --restart retrains)")
    else:
        print(f"trained {cfg.method}: checkpoints in {cfg.run_dir}")


def train_main(argv: Optional[List[str]] = None) -> int:
    p = _parser("scl-train", "Train one method (SCL, CE, ProtoNet, MAML, ...) from a config.", "config")
    p.add_argument("--restart", action="store_true",
                   help="delete run_dir's checkpoints and train from scratch (needed to change weight settings)")
    p.add_argument("--no-resume", action="store_true", help="same as --restart")
    p.add_argument("--print-config", action="store_true",
                   help="print the resolved config (every key, with overrides applied) and exit")
    return _run(_train, p.parse_intermixed_args(argv))


# ----------------------------------------------------------------------------- eval
def _eval(args: argparse.Namespace) -> None:
    from . import pipeline, runs
    from .config import ConfigError, load_config
    from .data import build_test_tasks
    from .evaluation import format_table, mean_ci
    if args.weights:
        method, cfg = _method_from_weights(args)
    else:
        from .utils import expand
        run_dir = expand(args.run_dir)
        if not (run_dir / "config.yaml").exists():
            raise ConfigError(f"{run_dir.resolve()} is not a run directory (no config.yaml): give a run_dir "
                              f"written by scl-train")
        trained = load_config(run_dir / "config.yaml")
        cfg = load_config(run_dir / "config.yaml", args.overrides)
        have, want = runs.weight_settings(trained), runs.weight_settings(cfg)
        changed = [k for k in want if have.get(k) != want.get(k)
                   and (not k.startswith("data.") or k == "data.image_size")]
        if changed:      # evaluation and episode options only: the weights are what they were trained with
            raise ConfigError(f"{', '.join(changed)} cannot change in scl-eval: the run was trained with "
                              f"{', '.join(f'{k}={have.get(k)}' for k in changed)}; override only eval.* and "
                              f"data.* test settings, or train another run")
        method, _ = pipeline.load_trained(run_dir, cfg=cfg)
    d = cfg.data
    extra = {}
    if cfg.eval.select:                  # test-time settings chosen on validation episodes first
        from .config import with_settings
        from .data.fewshot import build_val_tasks
        from .selection import select
        val = build_val_tasks(d)
        choice = select(cfg, lambda c: pipeline.evaluate(method, c, val, d.ways, d.shots, d.queries, progress=False))
        print(f"chose {choice.label} on {len(val)} validation episodes (" + ", ".join(
            f"{s['settings']}: {100 * s['acc']:.2f}" for s in choice.scores) + ")")
        cfg, extra = with_settings(cfg, choice.settings), {"test_time": f"{choice.label} (val)"}
    tasks = build_test_tasks(d)          # the test split only: train/validation are not needed
    accs = pipeline.evaluate(method, cfg, tasks, d.ways, d.shots, d.queries)
    mean, ci = mean_ci(accs, ci=cfg.eval.ci)
    print(format_table([{"method": cfg.method, "dataset": d.test_dataset or d.dataset, "ways": d.ways,
                         "shots": d.shots, "episodes": len(accs), "acc": mean, "ci95": ci,
                         "protocol": pipeline.protocol_for(cfg), **extra}]))


def _method_from_weights(args: argparse.Namespace):
    """``--weights FILE --format rfs CONFIG``: the config's method with an RFS / SCL ResNet-12
    (for ce / scl also its classifier and SCL's projection head and attention; see
    :func:`scl_plugin.pipeline.build_released`)."""
    from pathlib import Path
    from . import pipeline
    from .backbones.rfs import RFSCheckpointError
    from .config import ConfigError, load_config
    cfg = load_config(args.run_dir, args.overrides)
    try:
        method, _ = pipeline.build_released(cfg, args.weights)
    except RFSCheckpointError as e:     # the file given is the user's input: exit code 2, naming it
        msg = str(e)
        raise ConfigError(msg if str(Path(args.weights).expanduser()) in msg
                          else f"--weights {args.weights}: {msg}") from None
    return method, cfg


def eval_main(argv: Optional[List[str]] = None) -> int:
    p = _parser("scl-eval", "Evaluate a trained run on seeded test episodes (mean accuracy, 95% CI). "
                            "The SCL authors' protocol: eval.protocol=scl eval.support_augment=5 "
                            "eval.combine=sum eval.ci=t.", "run_dir")
    p.add_argument("--weights", metavar="FILE", default=None,
                   help="evaluate this checkpoint instead of a run: RUN_DIR is then a config YAML "
                        "(e.g. scl-eval --weights resnet12_last.pth --format rfs configs/paper/mini-imagenet.yaml)")
    p.add_argument("--format", choices=["rfs"], default="rfs",
                   help="layout of --weights: rfs = a ResNet-12 saved by RFS's code ({'model': state_dict}, "
                        "layer1..4 keys) or by SCL's (ContrastResNet: encoder.layer1..4, head.net; "
                        "'attention' beside it), with or without a module. prefix")
    return _run(_eval, p.parse_intermixed_args(argv))


# ----------------------------------------------------------------------------- bench
def _bench(args: argparse.Namespace) -> None:
    from .bench import load_suite, run_suite
    from .evaluation import format_table
    from accelerate import PartialState
    from .bench import SuiteFailed
    suite = load_suite(args.suite, args.overrides)
    try:
        only = [m.strip() for m in args.only.split(",") if m.strip()] if args.only else None
        rows = run_suite(suite, max_methods=args.max_methods, restart=args.restart, only=only)
    except SuiteFailed as e:             # the table of what did run, then the one-line error
        if e.rows and PartialState().is_main_process:
            print()
            print(format_table(e.rows))
            print(f"\npartial results: {suite.run_dir}/results.partial.md (.csv, .json, .png); "
                  f"the last complete table is {suite.run_dir}/results.md")
        raise
    if rows and PartialState().is_main_process:
        print()
        print(format_table(rows))
        from .utils import expand
        partial = (expand(suite.run_dir) / "results.partial.md").exists()   # stopped at --max-methods
        print(f"\nresults: {suite.run_dir}/results{'.partial' if partial else ''}.md (.csv, .json, .png)")


def bench_main(argv: Optional[List[str]] = None) -> int:
    p = _parser("scl-bench", "Run a benchmark suite: train every method, evaluate all on the same "
                             "episodes, write a table and a plot.", "suite")
    p.add_argument("--max-methods", type=int, default=None,
                   help="train at most this many methods, then stop (rerun to continue)")
    p.add_argument("--restart", action="store_true",
                   help="retrain the methods whose finished run was trained with other settings")
    p.add_argument("--only", metavar="NAMES", default=None,
                   help="comma-separated method names: run only these (a suite trained in parts)")
    return _run(_bench, p.parse_intermixed_args(argv))


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    commands = {"train": train_main, "eval": eval_main, "bench": bench_main}
    if not argv or argv[0] not in commands:
        print("usage: python -m scl_plugin.cli {train,eval,bench} ... (or scl-train / scl-eval / scl-bench)",
              file=sys.stderr)
        return EXIT_CONFIG
    return commands[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main())
