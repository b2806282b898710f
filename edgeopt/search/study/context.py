"""What every process of a search reads once: the run's config, profiles, baseline, data."""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from edgeopt.config import Objective, RunConfig
from edgeopt.data import DataSource, first_inputs, open_source
from edgeopt.profiles import HardwareProfile, Targets, resolve_targets
from edgeopt.rundir import Baseline, RunDir
from edgeopt.stages import STAGES, ModelFacts, ProbeInput

LEGACY_TRIAL_TIMEOUT_S = 900.0


def model_facts(baseline: Baseline, baseline_onnx: Path) -> Any:
    """The stages' facts about the model (``edgeopt.stages.ModelFacts``) from what their
    probes stored at setup; a stage with nothing stored (a run set up before it had a
    probe) looks at the baseline ONNX file now."""
    stored = dict(baseline.stage_facts)
    missing = [name for name in STAGES if name not in stored]
    if missing:
        model = ProbeInput(
            module=None, onnx_path=baseline_onnx, input_shape=tuple(baseline.input_shape)
        )
        stored.update({name: dict(STAGES[name].probe(model)) for name in missing})
    return ModelFacts(onnx_input=baseline.onnx_input, stages=stored)


@dataclass(frozen=True)
class Trust:
    """The user's command-line opt-ins to running code: from the model file (``pickle``,
    ``arch``), the builder ``--arch`` names (``arch_ref``), which is the only way a
    state_dict's builder recorded in ``run.json`` is ever imported, and the Datasets callable
    ``--data module:callable`` names (``data_ref``), which no record ever names."""

    pickle: bool = False
    arch: bool = False
    arch_ref: str | None = None
    data_ref: str | None = None

    def flags(self) -> dict[str, Any]:
        return {"trust_pickle": self.pickle, "trust_arch": self.arch, "arch": self.arch_ref}

    def argv(self) -> list[str]:
        """The same opt-ins for a worker process's command line."""
        arch = ["--arch", self.arch_ref] if self.arch_ref else []
        data = ["--data", self.data_ref] if self.data_ref else []
        return ["--trust-pickle"] * self.pickle + ["--trust-arch"] * self.arch + arch + data


def run_targets(config: RunConfig, targets: Targets | None = None) -> Targets:
    """The run's target profiles: ``targets`` as the entry point resolved them, else (a worker
    process, a library caller) resolved now from ``config.targets``, once per process.

    Raises ConfigError when a profile's content is not what the run recorded when it started
    (``RunConfig.profile_digests``): a file edited mid-run never changes a running search."""
    if targets is None:
        targets = resolve_targets(config.targets)
    targets.check_unchanged(dict(config.profile_digests or {}))
    return targets


@dataclass(frozen=True)
class SearchContext:
    """A prepared run as one process sees it.

    ``targets`` are the run's profiles, resolved once (``run_targets``); ``facts`` what the
    stages need to know about the model (``edgeopt.stages.ModelFacts``).
    """

    run: RunDir
    config: RunConfig
    targets: Targets
    objectives: tuple[Objective, ...]
    baseline: Baseline
    sample: Any
    """One validation input (numpy) candidates are timed on; None without data."""
    facts: Any

    @classmethod
    def open(
        cls, run_dir: Path, trust: Trust | None = None, targets: Targets | None = None
    ) -> SearchContext:
        """Load the run that ``setup.prepare`` wrote. ``run.json`` is data: the model's trust
        flags and a callable data source's reference come from ``trust`` (the command
        line), never from the file; ``targets``, the profiles the entry point resolved (see
        ``run_targets``)."""
        run = RunDir(run_dir)
        config = run.read_config()
        if trust is not None:
            config = replace(config, model=config.model.with_trust(**trust.flags()))
            if config.data is not None:
                config = replace(config, data=config.data.with_ref(trust.data_ref))
        targets = run_targets(config, targets)
        baseline = run.read_baseline()
        return cls(
            run=run,
            config=config,
            targets=targets,
            objectives=tuple(config.objective_list(targets.names)),
            baseline=baseline,
            sample=_sample(run, config),
            facts=model_facts(baseline, run.baseline_onnx),
        )

    @cached_property
    def data(self) -> DataSource | None:
        """The run's data, opened on first use (the search itself needs only ``sample``)."""
        return open_source(self.config.data, verify=False) if self.config.data else None

    @property
    def profiles(self) -> tuple[HardwareProfile, ...]:
        """The real profiles each candidate is measured or estimated on."""
        return self.targets.profiles

    @property
    def merged(self) -> HardwareProfile:
        """The profile candidates are suggested for (every target must run them)."""
        return self.targets.merged

    @property
    def trial_timeout_s(self) -> float:
        """``--trial-timeout``, or with ``auto`` the stages' measured costs of their longest
        draws (a fine-tune round's, a QAT epoch's) plus an allowance
        (``search.run.setup.auto_timeout``); 15 minutes for runs set up before that was
        measured."""
        if self.config.trial_timeout_s is not None:
            return self.config.trial_timeout_s
        return self.baseline.auto_timeout_s or LEGACY_TRIAL_TIMEOUT_S

    @property
    def storage_url(self) -> str:
        return self.run.storage_url(self.config)


def _sample(run: RunDir, config: RunConfig) -> Any:
    """``baseline/sample.npy``'s first input: a worker needs one sample, not the data (a run
    set up before that file existed opens its data for it). A data-free run of a model with
    several inputs has synthetic ones there; one of one float input has none."""
    if run.sample_file.exists():
        return np.load(run.sample_file)[:1]
    if not config.data:
        return None
    return first_inputs(open_source(config.data, verify=False), "val", 1)
