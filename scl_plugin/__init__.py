"""scl_plugin: Spatial Contrastive Learning (Ouali, Hudelot & Tami, ECML-PKDD 2021) for learn2learn.

Layout (one place for each thing):
  registry      the method registry: name -> class, batches, default classifier, parent, stages
  config        typed dataclass configs loaded from YAML (configs/); method names from the registry
  data          learn2learn datasets, flat pretraining sets and seeded episode samplers
  backbones     timm backbones (resnet12 / conv4 registered as timm models), spatial features
  losses        CE, global contrastive, spatial contrastive, distillation
  algorithms    one file per method (registered by a decorator), on the bases of algorithms/base.py:
                ``loss(batch)`` to train, ``adapt(xs, ys)`` to evaluate
  evaluation    feature extraction, batched logistic regression, prototypes, CIs, reports
  analysis      representation analyses: spectra, k-NN, CKA feature reuse, alignment / uniformity
  training      the Accelerate training loop and checkpoints
  runs          what a run directory holds and whether it matches the settings
  pipeline      config -> trained, evaluated method (knows no method by name)
  bench         the side-by-side benchmark harness
  cli           scl-train / scl-eval / scl-bench
"""
import contextlib as _contextlib
import io as _io

__version__ = "0.1.0"

# learn2learn imports gym at top level, and gym prints a deprecation banner to stderr on
# import (we use none of learn2learn's gym parts). Import it once, quietly.
with _contextlib.redirect_stderr(_io.StringIO()):
    try:
        import gym as _gym  # noqa: F401
    except ImportError:
        pass

from . import backbones  # noqa: E402,F401  (registers resnet12 / conv4 in timm's registry)
from . import algorithms  # noqa: E402,F401  (registers every method in scl_plugin.registry)
