"""cityviz: helpers for the notebook series on Shi, Khademi and van Gemert,
"Deep Visual City Recognition Visualization" (arXiv:1905.01932).

The notebooks in ``notebooks/`` tell the story; this package holds what they
repeat. Each module's docstring names the notebook that explains it.
"""

import importlib

# The helpers are imported on first use (PEP 562), so that a light entry point
# such as `data_download.sh --help` works before the heavy dependencies are installed.
_EXPORTS = {
    "PROFILES": "settings", "Settings": "settings", "get_settings": "settings", "settings_hash": "settings",
    "Artifact": "artifacts", "artifact": "artifacts",
    "load_results": "results", "merge_results": "results", "update_results": "results",
    "progress": "utils", "set_seed": "utils", "short_path": "utils",
    "setup": "hosted", "home": "settings",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    try:
        return importlib.import_module(f".{name}", __name__)  # a submodule, e.g. cv.settings
    except ModuleNotFoundError as err:
        if err.name != f"{__name__}.{name}":  # the submodule exists but needs something missing
            raise
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None


__version__ = "0.1.0"
