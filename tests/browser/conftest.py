"""The browser test runs only when asked for by path (``make browser-test``, which ``make test``
runs after nbval): it needs Chromium and the artifact cache that nbval fills, so a plain
``pytest tests`` leaves it out."""

from pathlib import Path

HERE = Path(__file__).resolve().parent


def pytest_ignore_collect(collection_path, config):
    asked = [(config.invocation_params.dir / arg.split("::")[0]).resolve() for arg in config.args]
    if not any(path == HERE or HERE in path.parents for path in asked):
        return True
    return None
