"""edgeopt's own bundle format: saving and reading it, and which architectures it may build."""

from __future__ import annotations

import importlib
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from edgeopt.errors import ConfigError
from edgeopt.inputs import ModelInputs
from edgeopt.loading.limits import check_input_size
from edgeopt.loading.spec import (
    BUILTIN_ARCH_MODULE,
    LoadedModel,
    ModelFormat,
    ModelSpec,
    is_builtin_arch,
)

BUNDLE_KEY = "edgeopt_bundle"
BUNDLE_VERSION = 1
_ARCH_REF = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*")


def resolve_callable(ref: str, flag: str = "--arch") -> Any:
    """Import ``module:callable`` (e.g. ``mypkg.nets:resnet18``) for the command-line option
    ``flag`` (``--arch``, ``--data``), which the error messages name.

    This imports and so runs the module's code: call it only with a reference the user named
    or trusted (see the module docstring)."""
    module_name, _, attr = ref.partition(":")
    if not module_name or not attr:
        raise ConfigError(
            f"invalid architecture reference {ref!r}",
            hint="use --arch module.path:callable, e.g. --arch mypkg.nets:resnet18",
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(
            f"cannot import {module_name!r} for {flag} {ref}: {exc}",
            hint="make the module importable (pip install it or add its folder to PYTHONPATH)",
        ) from exc
    except Exception as exc:  # the module itself raises while it is imported
        raise ConfigError(
            f"importing {module_name!r} for {flag} {ref} failed: {type(exc).__name__}: {exc}"
        ) from exc
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ConfigError(f"{module_name!r} has no attribute {attr!r} (from {flag} {ref})")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ConfigError(f"{flag} {ref} is not callable")
    return obj


def save_bundle(
    model: Any,
    path: str | Path,
    *,
    arch: str,
    arch_kwargs: Mapping[str, Any] | None = None,
    input_shape: tuple[int, ...],
    inputs: ModelInputs | None = None,
) -> Path:
    """Save ``model``'s weights as an edgeopt bundle that loads with ``weights_only=True``.
    ``inputs``: every input of a model that takes several or integer ones (``input_shape``
    is then the first one's)."""
    import torch

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        BUNDLE_KEY: BUNDLE_VERSION,
        "arch": arch,
        # JSON keeps the kwargs to plain types the safe unpickler accepts
        "arch_kwargs": json.dumps(dict(arch_kwargs or {})),
        "input_shape": list(input_shape),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    if inputs is not None:
        payload["inputs"] = json.dumps(inputs.to_dict())
    tmp = out.with_name(out.name + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(out)
    return out


def _bundle_fields(
    p: Path, obj: Mapping[str, Any]
) -> tuple[str, dict[str, Any], tuple[int, ...], Mapping[str, Any]]:
    """``(arch, arch_kwargs, input_shape, state_dict)`` of a bundle, checked; ConfigError for
    a bundle this edgeopt cannot read or whose fields are malformed."""
    version = obj.get(BUNDLE_KEY)
    if not isinstance(version, int) or version > BUNDLE_VERSION:
        raise ConfigError(
            f"{p} is an edgeopt bundle of version {version!r}; this edgeopt reads version "
            f"{BUNDLE_VERSION}",
            hint="upgrade edgeopt or re-save the bundle with this version",
        )
    hint = "re-save it with edgeopt.loading.save_bundle"
    missing = [k for k in ("arch", "input_shape", "state_dict") if k not in obj]
    if missing:
        raise ConfigError(f"{p} is a corrupt edgeopt bundle: no {', '.join(missing)}", hint=hint)
    arch = obj["arch"]
    if not isinstance(arch, str) or not _ARCH_REF.fullmatch(arch):
        raise ConfigError(
            f"{p} is a corrupt edgeopt bundle: invalid architecture reference {arch!r}", hint=hint
        )
    try:
        kwargs = json.loads(obj.get("arch_kwargs") or "{}")
    except (TypeError, ValueError):
        kwargs = None
    if not isinstance(kwargs, dict):
        raise ConfigError(
            f"{p} is a corrupt edgeopt bundle: arch_kwargs is not a JSON object", hint=hint
        )
    raw_shape = obj["input_shape"]
    shape = tuple(raw_shape) if isinstance(raw_shape, list | tuple) else ()
    if not shape or not all(isinstance(d, int) and d > 0 for d in shape):
        raise ConfigError(
            f"{p} is a corrupt edgeopt bundle: invalid input_shape {raw_shape!r}", hint=hint
        )
    if not isinstance(obj["state_dict"], Mapping):
        raise ConfigError(f"{p} is a corrupt edgeopt bundle: state_dict is not a dict", hint=hint)
    return arch, kwargs, shape, obj["state_dict"]


def load_bundle(p: Path, obj: Mapping[str, Any], spec: ModelSpec) -> LoadedModel:
    """Build a bundle's model; its recorded architecture only when edgeopt's own, named by
    ``spec.arch`` or trusted (``spec.trust_arch``)."""
    recorded, kwargs, shape, state_dict = _bundle_fields(p, obj)
    inputs = _bundle_inputs(p, obj)
    if spec.arch is None and not spec.trust_arch and not is_builtin_arch(recorded):
        raise ConfigError(
            f"{p} names architecture {recorded!r}, which is not one of edgeopt's own "
            f"({BUILTIN_ARCH_MODULE}); building it would import and run that code",
            hint="if you trust this file and the code it names, pass --trust-arch; or pass "
            "--arch MODULE:CALLABLE to build it with code you choose",
        )
    if spec.input_shape is None:  # a given one is checked where it is read (load_spec)
        check_input_size(shape, f"bundle {p}")
    module = build_arch(
        p, spec.arch or recorded, {**kwargs, **(spec.arch_kwargs or {})}, state_dict
    )
    return LoadedModel(
        p, ModelFormat.BUNDLE, spec.input_shape or shape, module=module, input_specs=inputs
    )


def _bundle_inputs(p: Path, obj: Mapping[str, Any]) -> ModelInputs | None:
    """The inputs a bundle records (None: one float input of its ``input_shape``)."""
    if obj.get("inputs") is None:
        return None
    try:
        return ModelInputs.from_dict(json.loads(obj["inputs"]))
    except (TypeError, ValueError, KeyError) as exc:
        raise ConfigError(
            f"{p} is a corrupt edgeopt bundle: invalid inputs ({exc})",
            hint="re-save it with edgeopt.loading.save_bundle",
        ) from exc


def build_arch(p: Path, arch: str, kwargs: Mapping[str, Any], state_dict: Mapping[str, Any]) -> Any:
    """``arch`` (``module:callable``) built with ``kwargs`` and ``state_dict`` loaded strictly,
    in eval mode; ConfigError when it cannot be built or the weights do not fit. ``p`` is the
    file the weights came from (for the message)."""
    import torch

    builder = resolve_callable(arch)
    _check_fits_on_meta(p, arch, builder, kwargs, state_dict)
    try:
        module = builder(**kwargs)
    except Exception as exc:
        raise ConfigError(
            f"cannot build {arch} with kwargs {dict(kwargs)}: {exc}",
            hint="check --arch-kwargs against the builder's parameters",
        ) from exc
    if not isinstance(module, torch.nn.Module):
        raise ConfigError(f"{arch} returned a {type(module).__name__}, not a torch.nn.Module")
    try:
        module.load_state_dict(state_dict, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()
        detail = first[1].strip() if len(first) > 1 else first[0]
        raise ConfigError(
            f"weights in {p} do not fit architecture {arch}: {detail}",
            hint="check --arch and --arch-kwargs match the model that was saved",
        ) from exc
    return module.eval()


def _check_fits_on_meta(
    p: Path, arch: str, builder: Any, kwargs: Mapping[str, Any], state_dict: Mapping[str, Any]
) -> None:
    """ConfigError when ``state_dict`` does not fit ``builder(**kwargs)``, found by building it
    on the meta device (shapes only, no memory): kwargs in a small file (a width of 5000)
    would otherwise make edgeopt allocate gigabytes before it refuses the weights."""
    import torch

    try:
        with torch.device("meta"):
            meta = builder(**kwargs)
        expected = {k: tuple(v.shape) for k, v in meta.state_dict().items()}
    except Exception:
        return  # a builder that cannot run on meta: the real build reports what is wrong
    given = {k: tuple(v.shape) for k, v in state_dict.items() if isinstance(v, torch.Tensor)}
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    wrong = [k for k in expected if k in given and given[k] != expected[k]]
    if not (missing or unexpected or wrong):
        return
    if wrong:
        k = wrong[0]
        detail = f"size mismatch for {k}: the file holds {list(given[k])}, {arch} builds "
        detail += f"{list(expected[k])}"
    elif missing:
        detail = f"missing key(s) {', '.join(missing[:3])}" + (", ..." if len(missing) > 3 else "")
    else:
        detail = f"unexpected key(s) {', '.join(unexpected[:3])}"
        detail += ", ..." if len(unexpected) > 3 else ""
    n_expected = sum(int(torch.Size(s).numel()) for s in expected.values())
    n_given = sum(int(torch.Size(s).numel()) for s in given.values())
    raise ConfigError(
        f"weights in {p} do not fit architecture {arch}: {detail} (the file holds {n_given:,} "
        f"weight values, the architecture {n_expected:,}; nothing was built)",
        hint="check --arch and --arch-kwargs match the model that was saved",
    )
