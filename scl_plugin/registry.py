"""The method registry: a method's name -> its class and how it is trained and evaluated.

Each method's own file registers it with a decorator on its class, as timm's
``register_model`` fills its model table and :func:`scl_plugin.data.registry.register` the
data layouts::

    @register_method("r2d2", batches="episodes", classifier="native")
    class R2D2(EpisodicMethod):
        ...

The decorator's keywords declare what every consumer needs to know about the method, so none of
them names a method:

* ``batches``: what the training loop feeds ``loss(batch)``: ``"episodes"`` (meta-batches of
  tasks; trained with Adam at ``episodic.meta_lr`` for ``episodic.meta_iterations`` steps),
  ``"flat"`` (image batches of ``data.batch_size``, two views when the method's
  ``needs_two_views``) or ``"pk"`` (P classes x K images, ``embed.pk_classes`` x ``embed.pk_images``);
* ``classifier``: what ``eval.classifier=auto`` means for it (``"native"``: its own ``adapt``);
* ``needs_init``: the parent the backbone must start from (``episodic.init_from``), in words;
* ``distills``: the method is a teacher: a distillation stage (``distill.*``) may follow its
  training, or replace it (``distill.teacher``);
* any other keyword is a constructor option fixed for this name: one class may be registered
  under several names (``fomaml`` is MAML with ``first_order=True``).

The class builds itself from a config (``cls.from_config(cfg, backbone, data, gather=..., **options)``)
and may validate the config for itself (``cls.check_config(cfg)``, called by
:func:`scl_plugin.config.load_config`). The package's face (``scl_plugin/__init__.py``) imports
:mod:`scl_plugin.algorithms`, so the built-in methods are registered whenever any part of the
package is; a method defined elsewhere (a user's module, a test) is registered when its module
is imported, and is then a ``method:`` like any other.

This module imports nothing of the package: the config (a lower layer than the methods) asks it
for the method names at validation time.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

__all__ = ["BATCHES", "MethodEntry", "register_method", "get_method", "method_names"]

BATCHES = ("episodes", "flat", "pk")


@dataclass(frozen=True)
class MethodEntry:
    """One registered method: ``name`` -> ``cls`` built with ``options``, and its declared traits."""

    name: str
    cls: type
    batches: str
    classifier: str
    needs_init: Optional[str] = None
    distills: bool = False
    options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def episodic(self) -> bool:
        """Meta-trained on episodes (the ``episodic`` section's schedule)."""
        return self.batches == "episodes"

    @property
    def parent_key(self) -> str:
        """The config key naming the run it starts from: a teacher's, or a backbone's initialisation."""
        return "distill.teacher" if self.distills else "episodic.init_from"

    def build(self, cfg: Any, backbone: Any, data: Any, *, gather: bool = False) -> Any:
        """The method module of ``cfg`` on ``backbone``; ``data``: the training set's shape
        (``num_classes``, ``channels``, ``image_size``)."""
        return self.cls.from_config(cfg, backbone, data, gather=gather, **self.options)

    def check(self, cfg: Any) -> None:
        """The method's own validation of ``cfg`` (raises ConfigError)."""
        check = getattr(self.cls, "check_config", None)
        if check is not None:
            check(cfg)


_METHODS: Dict[str, MethodEntry] = {}


def register_method(name: str, *, batches: str, classifier: str, needs_init: Optional[str] = None,
                    distills: bool = False, **options: Any) -> Callable[[type], type]:
    """Class decorator: register ``cls`` as method ``name`` (see the module docstring).

    Registering a name again replaces its entry (a reloaded module, a test run twice).

    Example (the method table's entries)::

        >>> entry = get_method("r2d2")
        >>> entry.cls.__name__, entry.batches, entry.classifier, entry.episodic
        ('R2D2', 'episodes', 'native', True)
        >>> get_method("fomaml").options, get_method("ce").distills, get_method("meta_baseline").needs_init
        ({'first_order': True}, True, 'CE or SCL')
    """
    if batches not in BATCHES:
        raise ValueError(f"register_method({name!r}): batches must be one of {', '.join(BATCHES)}, got {batches!r}")
    if not isinstance(classifier, str) or not classifier:
        raise ValueError(f"register_method({name!r}): classifier must name an eval.classifier, got {classifier!r}")

    def deco(cls: type) -> type:
        if not callable(getattr(cls, "from_config", None)):
            raise TypeError(f"register_method({name!r}): {cls.__name__} has no from_config(cfg, backbone, ...)")
        _METHODS[name] = MethodEntry(name, cls, batches, classifier, needs_init, distills, dict(options))
        return cls
    return deco


def get_method(name: str) -> MethodEntry:
    """The entry of method ``name`` (ValueError naming the registered ones otherwise)."""
    try:
        return _METHODS[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; registered: {', '.join(_METHODS)}") from None


def method_names(*, batches: Optional[str] = None, distills: Optional[bool] = None) -> Tuple[str, ...]:
    """Registered method names in registration order, optionally only those with these traits."""
    return tuple(n for n, e in _METHODS.items()
                 if (batches is None or e.batches == batches) and (distills is None or e.distills == distills))
