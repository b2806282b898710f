"""Hardware target profiles: typed dataclasses and a strict TOML loader.

One TOML file per target lives in the repository's top-level ``profiles/`` folder (installed
as the data package ``edgeopt.profile_files``). A number in a profile says where it came from
as an inline table ``{ v = 1.8e2, kind = "measured", src = "S14", note = "..." }`` whose
``kind`` is one of datasheet, paper, derived, 3rd-party, measured, assumption, whose ``src``
names keys of the file's ``[sources]`` (public documents: titles, URLs, datasheet names), and
whose ``note`` says how the number follows from them, or, for an ``assumption``, why it is
assumed. Values of kind ``assumption`` are listed by :attr:`HardwareProfile.assumptions` and
printed under every estimate; a bare number, or a kind other than assumption without ``src``,
is listed by :attr:`HardwareProfile.without_source`. Every shipped value is cited or an
assumption with its reason (tests/test_profile_sources.py).

The loader is strict: an unknown key, a wrong type or unit, or a missing required field raises
:class:`edgeopt.errors.ConfigError` naming the file, the key path and what was expected.

Layout of a profile file (units are part of the key names)::

    schema = "edgeopt-hw-profile/1"
    [profile]      name, kind, description, aliases, measured, threads, calibrated
    [quantization] modes, activation_type, weight_type, per_channel, int8_only
                   [, activation_symmetric]
    [pruning]      channel_multiple
    [runtime]      name (the runtime the device runs: ort | ort-format | openvino | litert |
                   tensorrt; ort when left out, see ``runtime_spec``), precision_hint
                   (OpenVINO: f32 | bf16 | f16, default f32), io_type (LiteRT: int8 for
                   full-integer int8 inputs/outputs), partition_policy ("multi" |
                   "single_prefix"), invoke_overhead_us, fusions, ort_providers
    [memory]       dram_bytes, sram_bytes, flash_bytes, activation_budget_bytes,
                   weights_in ("dram" | "flash"), activations_in ("dram" | "sram")
    [energy]       pj_per_byte (memory traffic, lower-bound model)
    [units.ID]     kind, peak_gops_fp32 / _fp16 / _int8, bandwidth_gbs, kernel_overhead_us,
                   kernel_overhead_us_int8 (default: kernel_overhead_us),
                   supported_ops, fallback, link_bandwidth_gbs, link_latency_us,
                   weight_cache_bytes
    [units.ID.efficiency]        one fraction of peak per op class (OP_CLASSES; optional
                                 "quantize" for Quantize/DequantizeLinear, else elementwise)
    [units.ID.efficiency_int8]   optional per-dtype overrides (also _fp16, _fp32)
    [units.ID.power]             idle_w, active_w, pj_per_op_fp32 / _fp16 / _int8
    [calibration]  date, method, command, machine, kendall_tau, median_rel_error, n_models
    [runner]       kind ("local" | "ssh"), host, user, port, identity_file, known_hosts, python,
                   workdir, providers, threads, timeout_s: where a measured profile is
                   measured (see ``edgeopt.profiles.runner_spec``)
    [sources]      KEY = "document / URL"

The first unit is the preferred one; an op it cannot run goes to its ``fallback`` unit.

Modules: ``schema`` (names and dataclasses), ``reader`` (strict table reading), ``parse`` (one
file's tables into a profile), ``runner`` (the ``[runner]`` table), ``loader`` (find, list,
resolve aliases), ``merge`` (several targets at once), ``runtime_spec`` (the runtimes a
profile may name), ``targets`` (a run's targets resolved once).
"""

from __future__ import annotations

from edgeopt.profiles.loader import (
    list_profiles,
    load_profile,
    profile_from_text,
    shipped_profile_dir,
    validate_profile_file,
)
from edgeopt.profiles.merge import merge_profiles, quantizes_with_ort, runs_contrib_ops
from edgeopt.profiles.runner_spec import RUNNER_KINDS, RUNNER_SPECS, LocalSpec, SshSpec
from edgeopt.profiles.schema import (
    DTYPES,
    FUSIONS,
    MS_QUANT_OPS,
    MS_TRANSFORMER_OPS,
    OP_CLASSES,
    OPTIONAL_OP_CLASSES,
    ORT_PROVIDERS,
    QUANT_MODES,
    SCHEMA,
    SOURCE_KINDS,
    UNIT_KINDS,
    Calibration,
    ComputeUnit,
    HardwareProfile,
    MemorySpec,
    PowerSpec,
    PruningSupport,
    QuantSupport,
    RunnerSpec,
    RuntimeSpec,
    TargetKind,
    ValueSource,
)
from edgeopt.profiles.targets import Targets, profiles_changed, resolve_targets

__all__ = [
    "DTYPES",
    "FUSIONS",
    "MS_QUANT_OPS",
    "MS_TRANSFORMER_OPS",
    "OPTIONAL_OP_CLASSES",
    "OP_CLASSES",
    "ORT_PROVIDERS",
    "QUANT_MODES",
    "RUNNER_KINDS",
    "RUNNER_SPECS",
    "SCHEMA",
    "SOURCE_KINDS",
    "UNIT_KINDS",
    "Calibration",
    "ComputeUnit",
    "HardwareProfile",
    "LocalSpec",
    "MemorySpec",
    "PowerSpec",
    "PruningSupport",
    "QuantSupport",
    "RunnerSpec",
    "RuntimeSpec",
    "SshSpec",
    "TargetKind",
    "Targets",
    "ValueSource",
    "list_profiles",
    "load_profile",
    "merge_profiles",
    "profile_from_text",
    "profiles_changed",
    "quantizes_with_ort",
    "resolve_targets",
    "runs_contrib_ops",
    "shipped_profile_dir",
    "validate_profile_file",
]
