"""Every YAML under configs/ runs as shipped (issue 24): methods, ablations, paper recipes, suites.

Each file is loaded as a user would load it, its model is built at the config's own backbone and
image size, and it trains one step and scores one or two evaluation episodes through the suite
harness (``scl_plugin.bench``), on data written in the dataset's real on-disk layout (RFS
pickles for mini-ImageNet / CIFAR-FS / FC100, learn2learn's PNG pickles for tiered-ImageNet,
learn2learn's CUB folders, class folders for the cross-domain sets; the real Omniglot files in
``../shared/data``). Only sizes are shrunk: images per class, epochs, steps, episodes, batch and
query counts. Backbone, image size, method, losses, protocol and every other setting stay as
shipped, so a config added later is covered by being there.

A suite's methods are all resolved exactly as the suite resolves them (its config, the suite's,
method's and dataset's overrides), validated (``check_suite``) and built at their backbone and
image size. A resolved run is then trained and scored unless a run with the same code path was
already trained and scored in this session: the same method with the same modes, flags and
zero/non-zero weights, whatever its data (dataset, roots), backbone (built above), counts and
sizes (ints: image size, shots, steps, iterations) and real-valued hyper-parameters. That keeps
the full-size suites, which repeat one set of methods on five datasets, inside the test budget;
every data layout a suite reads is read here too, and a suite run alone
(``-k suites/mini-imagenet``) trains what no earlier test in that session did.
"""
from __future__ import annotations

import io
import json
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from scl_plugin.bench import check_suite, load_suite, method_config, run_suite, training_config
from scl_plugin.config import load_config, to_dict

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SINGLE = sorted(p for p in CONFIGS.rglob("*.yaml") if "suites" not in p.parts)
# Single-dataset suites first: the cross-domain suite repeats mini-ImageNet's methods on four
# test sets, which the paper/cross-* configs read.
SUITES = sorted((CONFIGS / "suites").glob("*.yaml"),
                key=lambda p: (len(yaml.safe_load(p.read_text()).get("datasets", [])), p.name))

# Sizes only: one optimizer step per stage, one validation episode, two test episodes (a CI
# needs two), training episodes of one shot and one query per class, a batch of 4 images. The
# suite's (ways, shots) test settings stay as shipped.
SHRINK = [
    "train.epochs=1", "train.steps_per_epoch=1", "train.lr_decay_epochs=[]", "train.log_every=1",
    "train.keep_last=1", "distill.epochs=1", "episodic.meta_iterations=1", "episodic.meta_batch_size=1",
    "data.batch_size=4", "data.num_workers=0", "data.val_episodes=1", "data.test_episodes=2",
    "data.shots=1", "data.queries=1",
]
SUITE_SHRINK = ["test_episodes=2", "queries=1"]

CLASSES = 5            # per split: every shipped recipe trains and tests 5-way on these datasets
PER_CLASS = 16         # MetaOptNet / R2-D2 train on 15-shot episodes (+ 1 query)


def _id(p: Path) -> str:
    return str(p.relative_to(CONFIGS).with_suffix(""))


# ----------------------------------------------------------------------------- real on-disk layouts
def _py2_pickle(obj, path: Path) -> None:
    """A protocol-2 pickle whose strings are Python 2 ``str`` (BINSTRING), as RFS's files are."""
    class Py2(pickle._Pickler):
        dispatch = dict(pickle._Pickler.dispatch)

        def save_str(self, s):
            data = s if isinstance(s, bytes) else s.encode("latin1")
            op = pickle.SHORT_BINSTRING + bytes([len(data)]) if len(data) < 256 else \
                pickle.BINSTRING + struct.pack("<i", len(data))
            self.write(op + data)
            self.memoize(s)
        dispatch[bytes] = save_str
        dispatch[str] = save_str
    buf = io.BytesIO()
    Py2(buf, protocol=2).dump(obj)
    path.write_bytes(buf.getvalue())


def _images(rng, n: int, size: int) -> np.ndarray:
    return rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def _split_labels(split: str):
    first = {"train": 0, "val": 100, "test": 200}[split]        # sparse, disjoint class ids
    return [first + 7 * (i % CLASSES) for i in range(CLASSES * PER_CLASS)]   # interleaved


def _write_rfs_pickles(root: Path, names, size: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True)
    for split, fname in names.items():
        labels = _split_labels(split)
        _py2_pickle({"data": _images(rng, len(labels), size), "labels": labels,
                     "catname2label": {f"n{c:08d}": c for c in sorted(set(labels))}}, root / fname)


def _write_tiered_l2l(root: Path) -> None:
    rng = np.random.default_rng(1)
    d = root / "tiered-imagenet"
    d.mkdir(parents=True)
    for split in ("train", "val", "test"):
        labels = _split_labels(split)
        pngs = []
        for im in _images(rng, len(labels), 84):
            buf = io.BytesIO()
            Image.fromarray(im).save(buf, format="PNG")
            pngs.append(np.frombuffer(buf.getvalue(), np.uint8))
        with open(d / f"{split}_images_png.pkl", "wb") as f:
            pickle.dump(pngs, f)
        with open(d / f"{split}_labels.pkl", "wb") as f:
            pickle.dump({"label_specific": np.asarray(labels), "label_general": np.zeros(len(labels), int),
                         "label_specific_str": [f"c{v}" for v in labels]}, f)


def _write_class_folders(root: Path, names, per_class: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for c in names:
        (root / c).mkdir(parents=True)
        for i in range(per_class):    # JPEGs of varying size, as in the real sets
            Image.fromarray(_images(rng, 1, 24 + 4 * (i % 3))[0]).save(root / c / f"{i:03d}.jpg")


def _write_cub_l2l(root: Path) -> None:
    """learn2learn's CUBirds200 layout: all 200 class folders (the CloserLook split needs them)."""
    from learn2learn.vision.datasets.cu_birds200 import SPLITS
    names = sorted(sum(SPLITS.values(), []))
    _write_class_folders(root / "cubirds200" / "CUB_200_2011" / "images", names, 6, seed=3)


MINI_RFS = {"train": "miniImageNet_category_split_train_phase_train.pickle",
            "val": "miniImageNet_category_split_val.pickle", "test": "miniImageNet_category_split_test.pickle"}
WRITERS = {
    "mini-imagenet": lambda root: _write_rfs_pickles(root, MINI_RFS, 84, seed=0),
    "tiered-imagenet": _write_tiered_l2l,
    "cifarfs": lambda root: _write_rfs_pickles(root, {s: f"CIFAR_FS_{s}.pickle" for s in ("train", "val", "test")},
                                               32, seed=2),
    "fc100": lambda root: _write_rfs_pickles(root, {s: f"FC100_{s}.pickle" for s in ("train", "val", "test")},
                                             32, seed=4),
    "cub": _write_cub_l2l,
    "folder": lambda root: _write_class_folders(root, [f"class{k}" for k in range(CLASSES)], 6, seed=5),
}
# Methods that start from another run (``episodic.init_from``): their config alone cannot train,
# so the test trains the named parent config first, as a suite's ``init_from_method`` does.
PARENT = {"scl_protonet": "scl.yaml", "meta_baseline": "ce.yaml"}
REAL = {"omniglot-small", "synthetic"}     # the shipped root (../shared/data) or none


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    """``roots(dataset)`` -> a folder holding that dataset in its real layout (written once)."""
    made = {}

    def get(dataset: str) -> str:
        if dataset not in made:
            if dataset not in WRITERS:
                raise AssertionError(f"a shipped config uses dataset {dataset!r}: add its on-disk layout "
                                     f"to WRITERS in {Path(__file__).name}")
            made[dataset] = tmp_path_factory.mktemp(dataset.replace("-", "_"))
            WRITERS[dataset](made[dataset] / "data")
        return str(made[dataset] / "data")
    return get


def _root_overrides(dataset: str, test_dataset, roots) -> list:
    out = [] if dataset in REAL else [f"data.root={roots(dataset)}"]
    if test_dataset:
        out.append(f"data.test_root={roots(test_dataset)}")
    return out


def _shrink(tmp_path) -> list:
    """Command-line overrides: they win over the suite's, the method's and the dataset's."""
    return SUITE_SHRINK + SHRINK + [f"data.cache_dir={tmp_path / 'cache'}"]


def _check_rows(rows, methods, settings):
    assert [r["method"] for r in rows if "shots" in r][: len(methods)], rows
    scored = {(r["method"], r["ways"], r["shots"]) for r in rows}
    for m in methods:
        for ways, shots in settings:
            assert (m, ways, shots) in scored, (m, ways, shots, rows)
    for r in rows:           # the one-shot challenge scores its 20 runs, whatever the episode count
        assert 0.0 <= r["acc"] <= 1.0 and r["episodes"] == (20 if r["dataset"] == "omniglot-challenge" else 2), r


# ----------------------------------------------------------------------------- what a run exercises
# Keys that only say where the data is, which dataset it is, which parent run to start from, or
# the backbone (built separately at its size).
NOT_CODE = {"seed", "run_dir", "data.root", "data.test_root", "data.dataset", "data.test_dataset",
            "data.format", "data.cub_split", "data.cache_dir", "data.download", "episodic.init_from",
            "distill.teacher", "train.lr_decay_epochs", "model.name", "model.kwargs", "model.pretrained"}
EXERCISED: set = set()     # run signatures trained and scored in this session
READ: set = set()          # (dataset, test dataset) read in this session


def _flat(d, prefix=""):
    for k, v in d.items():
        if isinstance(v, dict) and k != "kwargs":
            yield from _flat(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v


def _signature(cfg) -> str:
    """The code path of a run: strings and flags as they are, real numbers as zero or not, no
    counts or sizes (ints)."""
    out = {}
    for k, v in _flat(to_dict(training_config(cfg))):
        if k in NOT_CODE or (isinstance(v, int) and not isinstance(v, bool)):
            continue
        out[k] = v != 0 if isinstance(v, float) else v
    return json.dumps(out, sort_keys=True, default=str)


def _record(suite, run_root: Path) -> None:
    for ds in suite.datasets:
        for spec in suite.methods:
            cfg = method_config(suite, spec, ds, run_root)
            READ.add((cfg.data.dataset, cfg.data.test_dataset))
            EXERCISED.add(_signature(cfg))


# ----------------------------------------------------------------------------- single configs
@pytest.mark.parametrize("path", SINGLE, ids=_id)
def test_config_trains_and_evaluates_as_shipped(path, roots, tmp_path):
    from scl_plugin.backbones import create_backbone
    from scl_plugin.data import channels_for
    shipped = load_config(path)
    d = shipped.data
    create_backbone(shipped.model, in_chans=channels_for(d.dataset), image_size=d.image_size)
    suite = {
        "name": path.stem, "run_dir": str(tmp_path / "runs"),
        "datasets": [{"name": d.dataset, "overrides": _root_overrides(d.dataset, d.test_dataset, roots)}],
        "settings": [[d.ways, d.shots]], "methods": [{"name": path.stem, "config": str(path)}],
    }
    if shipped.method in PARENT and not shipped.episodic.init_from:
        suite["methods"] = [{"name": "parent", "config": str(CONFIGS / PARENT[shipped.method])},
                            {"name": path.stem, "config": str(path), "init_from_method": "parent"}]
    (tmp_path / "suite.yaml").write_text(yaml.safe_dump(suite))
    loaded = load_suite(tmp_path / "suite.yaml", _shrink(tmp_path))
    rows = run_suite(loaded, log=lambda *a: None)
    _check_rows(rows, [m["name"] for m in suite["methods"]], [(d.ways, d.shots)])
    _record(loaded, tmp_path / "runs")
    run = load_config(tmp_path / "runs" / d.dataset / path.stem / "config.yaml")
    # what ran is what was shipped, sizes aside
    assert (run.method, run.model.name, run.model.kwargs, run.data.image_size, run.eval) == \
        (shipped.method, shipped.model.name, shipped.model.kwargs, shipped.data.image_size, shipped.eval)


# ----------------------------------------------------------------------------- suites
@pytest.mark.parametrize("path", SUITES, ids=_id)
def test_suite_trains_and_evaluates_every_method_as_shipped(path, roots, tmp_path):
    suite = load_suite(path, _shrink(tmp_path) + [f"run_dir={tmp_path / 'runs'}"])
    for ds in suite.datasets:
        test_dataset = None
        for o in ds.overrides:
            if o.startswith("data.test_dataset="):
                test_dataset = o.split("=", 1)[1]
        ds.overrides = ds.overrides + _root_overrides(ds.name, test_dataset, roots)
    check_suite(suite)
    from scl_plugin.backbones import create_backbone
    from scl_plugin.data import channels_for
    run_root, built, needed = tmp_path / "runs", set(), set()
    for ds in suite.datasets:
        for spec in suite.methods:
            cfg = method_config(suite, spec, ds, run_root)
            model = (cfg.model.name, json.dumps(cfg.model.kwargs, sort_keys=True), cfg.data.dataset, cfg.data.image_size)
            if model not in built:      # every backbone at its size, as the suite resolves it
                built.add(model)
                create_backbone(cfg.model, in_chans=channels_for(cfg.data.dataset), image_size=cfg.data.image_size)
            if (cfg.data.dataset, cfg.data.test_dataset) not in READ or _signature(cfg) not in EXERCISED:
                needed.add(spec.name)
    for m in reversed(suite.methods):           # a needed method's parent runs too
        if m.name in needed:
            needed.update(p for p in (m.run_of, m.init_from_method) if p)
    suite.methods = [m for m in suite.methods if m.name in needed]
    if not suite.methods:
        return
    if suite.reference not in needed:
        suite.reference = None
    rows = run_suite(suite, log=lambda *a: None)
    _check_rows(rows, [m.name for m in suite.methods], [tuple(s) for s in suite.settings])
    _record(suite, run_root)
