import pytest

from scl_plugin.config import Config, ConfigError, load_config


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_defaults_and_override():
    cfg = load_config(None, ["train.epochs=3", "data.ways=20", "loss.lambda_spatial=0.5"])
    assert isinstance(cfg, Config)
    assert cfg.train.epochs == 3 and cfg.data.ways == 20 and cfg.loss.lambda_spatial == 0.5


def test_unknown_key_names_the_key(tmp_path):
    p = write(tmp_path, "bad.yaml", "train:\n  epochz: 3\n")
    with pytest.raises(ConfigError, match=r"unknown config key 'train\.epochz'"):
        load_config(p)


def test_unknown_override_key():
    with pytest.raises(ConfigError, match=r"unknown config key 'data\.wayz'"):
        load_config(None, ["data.wayz=5"])


def test_wrong_type_names_the_key(tmp_path):
    p = write(tmp_path, "bad.yaml", "data:\n  shots: five\n")
    with pytest.raises(ConfigError, match=r"config key 'data\.shots'"):
        load_config(p)


def test_bad_choice_lists_allowed_values():
    with pytest.raises(ConfigError, match=r"'method'.*allowed: ce, scl, protonet, maml"):
        load_config(None, ["method=mamll"])


def test_bad_value():
    with pytest.raises(ConfigError, match=r"'data\.ways': must be >= 1"):
        load_config(None, ["data.ways=0"])


def test_base_extension(tmp_path):
    write(tmp_path, "base.yaml", "seed: 7\ntrain:\n  epochs: 5\n  lr: 0.1\n")
    child = write(tmp_path, "child.yaml", "_base_: base.yaml\ntrain:\n  epochs: 9\n")
    cfg = load_config(child, ["train.lr=0.2"])
    assert (cfg.seed, cfg.train.epochs, cfg.train.lr) == (7, 9, 0.2)


def test_bad_override_syntax():
    with pytest.raises(ConfigError, match="key=value"):
        load_config(None, ["train.epochs"])


def test_all_shipped_configs_validate():
    from pathlib import Path
    root = Path(__file__).resolve().parents[1] / "configs"
    files = [p for p in root.rglob("*.yaml") if "suites" not in p.parts]
    assert files, "no configs shipped"
    for p in files:
        load_config(p)
