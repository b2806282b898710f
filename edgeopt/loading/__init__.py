"""Load the model formats users actually have, safely by default.

Formats: edgeopt's own bundle (state_dict + architecture reference + input shape, readable with
``torch.load(weights_only=True)``), a plain ``state_dict`` with ``--arch module:callable``, a
TorchScript archive, a ``torch.export`` ``.pt2`` program, an ``.onnx`` file, and a full
``torch.save(model)`` pickle only with ``trust_pickle=True`` (unpickling runs code from the file).

What a file may make edgeopt run: nothing, unless the user opts in. A bundle's recorded
architecture is built only when it is one of edgeopt's own (``edgeopt.zoo``), when the user
names the builder with ``arch`` (``--arch``), or with ``trust_arch=True`` (``--trust-arch``).
A ``.pt2`` archive with payloads torch would unpickle in full loads only with ``trust_pickle``.
Zip archives are CRC-checked before torch reads them, and an ONNX file must open and run once
in ONNX Runtime before anything else uses it.
"""

from edgeopt.loading.bundle import BUNDLE_KEY, BUNDLE_VERSION, resolve_callable, save_bundle
from edgeopt.loading.checks import (
    check_input_shape,
    check_model_and_data,
    model_output_shape,
)
from edgeopt.loading.load import load_model, load_spec
from edgeopt.loading.spec import (
    BUILTIN_ARCH_MODULE,
    LoadedModel,
    ModelFormat,
    ModelSpec,
    is_builtin_arch,
    parse_shape,
)

__all__ = [
    "BUILTIN_ARCH_MODULE",
    "BUNDLE_KEY",
    "BUNDLE_VERSION",
    "LoadedModel",
    "ModelFormat",
    "ModelSpec",
    "check_input_shape",
    "check_model_and_data",
    "is_builtin_arch",
    "load_model",
    "load_spec",
    "model_output_shape",
    "parse_shape",
    "resolve_callable",
    "save_bundle",
]
