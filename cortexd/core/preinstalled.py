"""Cortex 0.23's pre-installed packages: which ones a project's code imports without listing them.

Cortex's predictor images came with boto3, numpy, pandas, scikit-learn, opencv,
torch, tensorflow and more (docs/deployments/realtime-api/predictors.md, section
"Pre-installed packages" of each predictor type), so real projects import them
without a requirements.txt line. The project's environment (process backend) or its
requirements image (Docker) adds the ones its code imports that neither its requirements
nor the runtime's own packages provide; backends/environment_plan.py and
backends/images.py do the I/O.

Pure: the import scan parses source text with ast (nothing is executed or
imported), and every decision takes what was observed (requirement names, the
runtime's importable modules, the project's own modules) as values.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from packaging.utils import canonicalize_name

# Distributions per predictor type, as listed for Cortex 0.23 (Inferentia left out). Their
# 2020 pins are not kept: they do not install on current Pythons, so current versions are added.
PYTHON_PREINSTALLED = (
    "boto3", "cloudpickle", "Cython", "dill", "fastapi", "joblib", "Keras", "msgpack", "nltk",
    "np-utils", "numpy", "opencv-python", "pandas", "Pillow", "pyyaml", "requests",
    "scikit-image", "scikit-learn", "scipy", "six", "statsmodels", "sympy", "tensorflow-hub",
    "tensorflow", "torch", "torchvision", "xgboost",
)
TENSORFLOW_PREINSTALLED = (
    "boto3", "dill", "fastapi", "msgpack", "numpy", "opencv-python", "pyyaml", "requests",
    "tensorflow-hub", "tensorflow-serving-api", "tensorflow",
)
ONNX_PREINSTALLED = (
    "boto3", "dill", "fastapi", "msgpack", "numpy", "onnxruntime", "pyyaml", "requests",
)
PREINSTALLED = {
    "python": PYTHON_PREINSTALLED,
    "legacy": PYTHON_PREINSTALLED,  # `kind: api` projects ran on the python images
    "tensorflow": TENSORFLOW_PREINSTALLED,
    "onnx": ONNX_PREINSTALLED,
}

# import name -> the distribution Cortex pre-installed for it, where the two differ
IMPORT_TO_DISTRIBUTION = {
    "cv2": "opencv-python",
    "sklearn": "scikit-learn",
    "skimage": "scikit-image",
    "PIL": "Pillow",
    "yaml": "pyyaml",
    "keras": "Keras",
    "np_utils": "np-utils",
    "tensorflow_hub": "tensorflow-hub",
    "tensorflow_serving": "tensorflow-serving-api",
    "Cython": "Cython",
    "cython": "Cython",
}

# other distributions that provide the same import: a requirements.txt naming one of these
# already provides the module (adding Cortex's choice too would install two copies of cv2)
ALTERNATIVES = {
    "opencv-python": ("opencv-python-headless", "opencv-contrib-python",
                      "opencv-contrib-python-headless"),
    "tensorflow": ("tensorflow-cpu", "tensorflow-gpu", "tensorflow-intel", "tensorflow-macos",
                   "tensorflow-aarch64", "tf-nightly", "tf-nightly-cpu"),
    "Pillow": ("pillow-simd",),
    "torch": ("torch-cpu",),
    "onnxruntime": ("onnxruntime-gpu", "onnxruntime-openvino", "onnxruntime-directml"),
    "xgboost": ("xgboost-cpu",),
}


@dataclass(frozen=True)
class Addition:
    """A pre-installed package added to a project's environment, and the import that needs it."""

    distribution: str
    import_name: str
    files: tuple[str, ...]  # project files that import it (relative paths)

    @property
    def notice(self) -> str:
        return f"{self.distribution}: pre-installed on Cortex 0.23, added"


def distribution_for_import(import_name: str, predictor_type: str) -> str | None:
    """The distribution Cortex pre-installed for `import_name` on this predictor type, else None."""
    listed = {canonicalize_name(d): d for d in PREINSTALLED.get(predictor_type, ())}
    dist = IMPORT_TO_DISTRIBUTION.get(import_name, import_name)
    return listed.get(canonicalize_name(dist))


def imported_modules(source: str) -> set[str]:
    """Top-level names of the modules `source` imports absolutely (`import a.b` -> "a").

    Every import statement counts, also inside functions and try blocks (a predictor
    imports in __init__ as often as at the top). Relative imports are the project's
    own. Source that does not parse imports nothing (the runtime reports the error).
    """
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return set()
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".", 1)[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            names.add(node.module.split(".", 1)[0])
    return names


def stdlib_modules() -> frozenset[str]:
    return frozenset(sys.stdlib_module_names) | frozenset(sys.builtin_module_names)


def preinstalled_additions(
    imports: Mapping[str, Iterable[str]],
    predictor_type: str,
    required: Iterable[str],
    runtime_has: Callable[[str], bool],
    project_modules: Iterable[str],
    stdlib: Iterable[str] | None = None,
) -> list[Addition]:
    """The pre-installed packages a project needs added, sorted by distribution.

    imports: {project file: modules it imports}; required: distribution names its
    requirements name; runtime_has(import name): the runtime's environment provides
    that module; project_modules: top-level names the project defines itself.
    """
    skip = set(stdlib_modules() if stdlib is None else stdlib) | set(project_modules)
    named = {canonicalize_name(r) for r in required}
    by_import: dict[str, list[str]] = {}
    for file, modules in imports.items():
        for module in modules:
            if module not in skip:
                by_import.setdefault(module, []).append(file)
    out: dict[str, Addition] = {}
    for module, files in sorted(by_import.items()):
        dist = distribution_for_import(module, predictor_type)
        if dist is None or dist in out:
            continue
        provided_by = {canonicalize_name(d) for d in (dist, *ALTERNATIVES.get(dist, ()))}
        if provided_by & named or runtime_has(module):
            continue
        out[dist] = Addition(dist, module, tuple(sorted(set(files))))
    return [out[d] for d in sorted(out, key=str.lower)]
