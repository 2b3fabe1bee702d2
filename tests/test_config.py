from pathlib import Path

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


# ----------------------------------------------------------------------------- kwargs belong to a backbone (issue 24, item 2)
PAPER = sorted((Path(__file__).resolve().parents[1] / "configs" / "paper").glob("*.yaml"))


@pytest.mark.parametrize("path", PAPER, ids=lambda p: p.stem)
def test_paper_configs_build_their_backbone_as_shipped(path):
    """configs/scl.yaml (Conv-4, depth 3) is their base: its kwargs must not reach a ResNet-12."""
    from scl_plugin.backbones import create_backbone
    from scl_plugin.data import channels_for
    cfg = load_config(path)
    assert cfg.model.name == "resnet12"   # and none of Conv-4's kwargs (configs/scl.yaml) reach it:
    assert set(cfg.model.kwargs) == {"drop_rate", "dropblock_size", "dropblock_ramp", "dropblock_mask"}
    create_backbone(cfg.model, in_chans=channels_for(cfg.data.dataset), image_size=cfg.data.image_size)


def test_model_kwargs_reset_with_the_name_and_clear_with_an_empty_mapping():
    base = Path(__file__).resolve().parents[1] / "configs" / "scl.yaml"
    assert load_config(base).model.kwargs == {"depth": 3}
    assert load_config(base, ["model.name=conv4"]).model.kwargs == {"depth": 3}        # same backbone: kept
    assert load_config(base, ["model.name=resnet12"]).model.kwargs == {}
    # kwargs on the same line belong to the new backbone, wherever they stand
    assert load_config(base, ["model.kwargs.drop_rate=0.1", "model.name=resnet12"]).model.kwargs == {"drop_rate": 0.1}
    assert load_config(base, ["model.kwargs={}"]).model.kwargs == {}
    assert load_config(base, ["model.kwargs={hidden: 32}"]).model.kwargs == {"hidden": 32}
