"""The model registry: built-in families and third-party plugins register :class:`ModelSpec` objects.

Built-in models live in :mod:`segdeploy.zoo` (one module per network family, each calling
:func:`register_model`). Other packages add models through the entry-point group
``segdeploy.models``: each entry point names a module (or a callable) that registers its specs when
loaded. Both are loaded lazily, on the first registry access; a plugin that fails to load is
reported by name (:func:`plugin_errors`, ``segdeploy list``) and never breaks the built-in models.
"""

from __future__ import annotations

import difflib
import importlib
import threading
import warnings
from importlib import metadata

from segdeploy.core.errors import ModelNotFound, UsageError
from segdeploy.core.specs import ModelSpec

ENTRY_POINT_GROUP = "segdeploy.models"
#: the package whose modules are the built-in families (imported by name: core sits below it)
BUILTIN_PACKAGE = "segdeploy.zoo"

_REGISTRY: dict[str, ModelSpec] = {}
_ORIGIN: dict[str, str] = {}
_PLUGIN_ERRORS: dict[str, str] = {}
_loaded = False
_loading = threading.RLock()
_current_origin = "segdeploy"


def register_model(spec: ModelSpec, *, replace: bool = False) -> ModelSpec:
    """Add ``spec`` to the registry and return it.

    Raises:
        UsageError: a model of that name exists (pass ``replace=True`` to override it on purpose).
    """
    if not isinstance(spec, ModelSpec):
        raise UsageError(f"register_model takes a ModelSpec, got {type(spec).__name__}")
    if spec.name in _REGISTRY and not replace:
        raise UsageError(f"model {spec.name!r} is registered twice "
                         f"(by {_ORIGIN.get(spec.name)} and by {_current_origin})")
    _REGISTRY[spec.name] = spec
    _ORIGIN[spec.name] = _current_origin
    return spec


def unregister_model(name: str) -> None:
    """Remove a model (for tests and plugins that replace themselves)."""
    _REGISTRY.pop(name, None)
    _ORIGIN.pop(name, None)


def _load_plugin(entry: metadata.EntryPoint) -> None:
    global _current_origin
    _current_origin = f"plugin {entry.name} ({entry.value})"
    try:
        target = entry.load()
        if callable(target):
            target()
    except Exception as exc:  # a broken plugin must not break the built-in models
        _PLUGIN_ERRORS[entry.name] = f"{entry.value}: {type(exc).__name__}: {exc}"
        warnings.warn(f"segdeploy: model plugin {entry.name!r} failed to load: {exc}", stacklevel=3)
    finally:
        _current_origin = "segdeploy"


def ensure_loaded() -> None:
    """Import the built-in families and the ``segdeploy.models`` entry points, once."""
    global _loaded
    if _loaded:
        return
    with _loading:
        if _loaded:
            return
        _loaded = True
        importlib.import_module(BUILTIN_PACKAGE)
        try:
            entries = metadata.entry_points(group=ENTRY_POINT_GROUP)
        except Exception as exc:  # a corrupt distribution's metadata
            _PLUGIN_ERRORS["<entry points>"] = f"{type(exc).__name__}: {exc}"
            entries = ()
        for entry in entries:
            _load_plugin(entry)


def list_models() -> list[str]:
    """Names of every registered model, built-in first, in registration order."""
    ensure_loaded()
    return list(_REGISTRY)


def plugin_errors() -> dict[str, str]:
    """{entry point name: why it failed to load} for plugins that could not be loaded."""
    ensure_loaded()
    return dict(_PLUGIN_ERRORS)


def get_spec(name: str | ModelSpec) -> ModelSpec:
    """Look a model up by name (a ModelSpec is returned as is).

    Raises:
        ModelNotFound: unknown name; the message suggests close matches and lists the known ones.
    """
    if isinstance(name, ModelSpec):
        return name
    ensure_loaded()
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        close = difflib.get_close_matches(str(name), _REGISTRY, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ModelNotFound(f"unknown model {name!r}.{hint} Known models: {', '.join(_REGISTRY)} "
                            "(see 'segdeploy list')") from None
