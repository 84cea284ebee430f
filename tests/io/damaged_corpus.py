"""benchmarks/damaged.py loaded as a module: the damaged corpus the io and worker tests share."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]


def load() -> ModuleType:
    if "damaged_corpus" in sys.modules:
        return sys.modules["damaged_corpus"]
    spec = importlib.util.spec_from_file_location("damaged_corpus", ROOT / "benchmarks/damaged.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module
