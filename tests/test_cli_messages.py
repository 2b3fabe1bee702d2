"""What the commands tell the user (issue 23, point 6): epilogs that match what each command
accepts, one-line errors for a missing argument or an unusable ``--weights`` file, and an
honest message when a finished run is reused instead of trained."""
import os
import re
from pathlib import Path

import pytest
import torch

from scl_plugin.cli import bench_main, eval_main, train_main

from test_trust import tiny

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
# what a tiny run's config needs to build a ResNet-12 for --weights (no training image is read)
WEIGHTS_OVER = ["data.dataset=synthetic", "data.image_size=16", "data.ways=3", "data.shots=1",
                "data.queries=2", "data.test_episodes=2", "model.name=resnet12"]


def _help(main, capsys) -> str:
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    return " ".join(capsys.readouterr().out.split())        # argparse wraps lines


def _overrides_suggested(text: str):
    return set(re.findall(r"(?<![\w.-])((?:[a-z_]+\.)*[a-z_]+)=\S", text))


def _only_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err, err
    return err.strip()


def test_each_command_suggests_overrides_it_accepts(capsys):
    train = _help(train_main, capsys)
    assert {"train.epochs", "data.shots", "model.name"} <= _overrides_suggested(train)
    ev = _help(eval_main, capsys)
    keys = _overrides_suggested(ev)
    assert {"eval.classifier", "data.shots", "data.test_episodes"} <= keys
    assert "eval.classifier=proto_cosine data.shots=5 data.test_episodes=1000" in ev
    assert not [k for k in keys if k.split(".")[0] in ("train", "model")], keys      # scl-eval refuses those
    assert "--weights" in ev and "config" in ev
    bench = _help(bench_main, capsys)
    assert {"test_episodes", "data.root"} <= _overrides_suggested(bench)
    assert "test_episodes=100" in bench and "every run" in bench


@pytest.mark.parametrize("main, argv, want", [
    (train_main, [], "error: give a config file, e.g. scl-train configs/scl.yaml [key=value ...]"),
    (train_main, ["--restart"], "error: give a config file"),
    (eval_main, [], "error: give a run directory"),
    (eval_main, ["--weights", "x.pth"], "error: give a run directory"),
    (bench_main, ["--max-methods", "1"], "error: give a suite file"),
])
def test_a_missing_config_is_named_in_one_line(main, argv, want, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = _only_error_line(capsys)
    assert err.startswith(want) and "key=value is required" not in err and "required:" not in err, err


def test_a_missing_weights_file_is_bad_input(tmp_path, capsys):
    missing = tmp_path / "nope.pth"
    assert eval_main(["--weights", str(missing), str(CONFIGS / "ce.yaml"), *WEIGHTS_OVER]) == 2
    err = _only_error_line(capsys)
    assert str(missing) in err and "not found" in err, err


class _Shell:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _Exec:
    def __reduce__(self):
        return (exec, ("raise SystemExit('exec ran')",))


@pytest.mark.parametrize("payload, name", [("shell", "posix.system" if os.name == "posix" else "system"),
                                           ("exec", "builtins.exec")])
def test_a_weights_file_that_would_run_code_is_refused_in_our_words(tmp_path, capsys, payload, name):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pth"
    torch.save({"model": _Shell(marker) if payload == "shell" else _Exec()}, evil)
    assert not marker.exists()
    assert eval_main(["--weights", str(evil), str(CONFIGS / "ce.yaml"), *WEIGHTS_OVER]) == 2
    assert not marker.exists()                              # the payload never ran
    err = _only_error_line(capsys)
    assert str(evil) in err and name in err and "would run code" in err and "refused" in err, err
    assert "weights_only" not in err and "trust" not in err and "\x1b" not in err, err    # no advice to disable it


def test_a_damaged_weights_file_keeps_the_cause_without_the_advice(tmp_path, capsys):
    bad = tmp_path / "damaged.pth"
    bad.write_bytes(b"not a checkpoint")
    assert eval_main(["--weights", str(bad), str(CONFIGS / "ce.yaml"), *WEIGHTS_OVER]) == 2
    err = _only_error_line(capsys)
    assert str(bad) in err and "cannot be loaded safely" in err and "weights_only" not in err, err


def test_reusing_a_finished_run_does_not_claim_it_trained(tmp_path, capsys):
    args = tiny(tmp_path)
    run = tmp_path / "run"
    assert train_main(args) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == f"trained ce: checkpoints in {run}"
    stamp = (run / "train" / "final.pt").stat().st_mtime_ns
    assert train_main(args) == 0
    out = capsys.readouterr().out.strip()
    assert out.splitlines()[-1] == f"ce: finished run reused from {run} (nothing trained; --restart retrains)"
    assert "trained ce" not in out and (run / "train" / "final.pt").stat().st_mtime_ns == stamp
    # what scl-eval's help suggests is accepted on that run
    assert eval_main([str(run), "eval.classifier=proto_cosine", "data.shots=5", "data.test_episodes=2"]) == 0
    assert "| ce" in capsys.readouterr().out
    # --restart trains again and says so
    assert train_main(["--restart", *args]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == f"trained ce: checkpoints in {run}"
