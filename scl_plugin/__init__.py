"""scl_plugin: Spatial Contrastive Learning (Ouali, Hudelot & Tami, ECML-PKDD 2021) for learn2learn.

Layout (one place for each thing):
  config        typed dataclass configs loaded from YAML (configs/)
  data          learn2learn datasets, flat pretraining sets and seeded episode samplers
  backbones     timm backbones (resnet12 / conv4 registered as timm models), spatial features
  losses        CE, global contrastive, spatial contrastive, distillation
  algorithms    SCL, ProtoNet, MAML, distillation, all with ``loss()`` and ``adapt()``
  evaluation    feature extraction, batched logistic regression, prototypes, CIs, reports
  training      the Accelerate training loop and checkpoints
  bench         the side-by-side benchmark harness
  cli           scl-train / scl-eval / scl-bench
"""
import os as _os
import warnings as _warnings

__version__ = "0.1.0"

# learn2learn imports gym, which prints a deprecation banner on import; silence it once here.
_os.environ.setdefault("GYM_DISABLE_WARNINGS", "1")
_warnings.filterwarnings("ignore", message=".*Gym has been unmaintained.*")
