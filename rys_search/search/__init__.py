"""The search: study configs, the define-by-run schedule space, samplers, the study loop.

    >>> from rys_search.search import load_config, run_study
    >>> summary = run_study(load_config(overrides={"trials": 50}))

optuna is imported only inside this package.
"""

from .config import ConfigError, StudyConfig, load_config

__all__ = ["ConfigError", "StudyConfig", "load_config", "run_study"]


def run_study(*args, **kwargs):
    from .study import run_study as _run

    return _run(*args, **kwargs)
