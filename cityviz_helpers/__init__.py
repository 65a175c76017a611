"""cityviz: helpers for the notebook series on Shi, Khademi and van Gemert,
"Deep Visual City Recognition Visualization" (arXiv:1905.01932).

The notebooks in ``notebooks/`` tell the story; this package holds what they
repeat. Each module's docstring names the notebook that explains it.
"""

from .settings import PROFILES, Settings, get_settings, settings_hash  # noqa: F401
from .artifacts import Artifact, artifact  # noqa: F401
from .results import load_results, merge_results  # noqa: F401
from .utils import progress, set_seed, short_path  # noqa: F401

__version__ = "0.1.0"
