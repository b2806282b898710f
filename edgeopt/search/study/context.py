"""What every process of a search reads once: the run's config, profiles, baseline, data."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from edgeopt.config import Objective, RunConfig
from edgeopt.data import load_npz
from edgeopt.profiles import load_profile, merge_profiles
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
    ``arch``), and the builder ``--arch`` names (``arch_ref``), which is the only way a
    state_dict's builder recorded in ``run.json`` is ever imported."""

    pickle: bool = False
    arch: bool = False
    arch_ref: str | None = None

    def flags(self) -> dict[str, Any]:
        return {"trust_pickle": self.pickle, "trust_arch": self.arch, "arch": self.arch_ref}

    def argv(self) -> list[str]:
        """The same opt-ins for a worker process's command line."""
        arch = ["--arch", self.arch_ref] if self.arch_ref else []
        return ["--trust-pickle"] * self.pickle + ["--trust-arch"] * self.arch + arch


@dataclass(frozen=True)
class SearchContext:
    """A prepared run as one process sees it.

    ``merged`` is the profile candidates are suggested for (every target must run them);
    ``profiles`` are the real ones each candidate is measured or estimated on; ``facts``
    what the stages need to know about the model (``edgeopt.stages.ModelFacts``).
    """

    run: RunDir
    config: RunConfig
    profiles: tuple[Any, ...]
    merged: Any
    objectives: tuple[Objective, ...]
    baseline: Baseline
    data: Any
    facts: Any

    @classmethod
    def open(cls, run_dir: Path, trust: Trust | None = None) -> SearchContext:
        """Load the run that ``setup.prepare`` wrote. ``run.json`` is data: the model's trust
        flags come from ``trust`` (the command line), never from the file."""
        run = RunDir(run_dir)
        config = run.read_config()
        if trust is not None:
            config = replace(config, model=config.model.with_trust(**trust.flags()))
        profiles = tuple(load_profile(t) for t in config.targets)
        baseline = run.read_baseline()
        return cls(
            run=run,
            config=config,
            profiles=profiles,
            merged=merge_profiles(list(profiles)),
            objectives=tuple(config.objective_list([p.name for p in profiles])),
            baseline=baseline,
            data=load_npz(config.data) if config.data else None,
            facts=model_facts(baseline, run.baseline_onnx),
        )

    @property
    def trial_timeout_s(self) -> float:
        """``--trial-timeout``, or with ``auto`` a multiple of the measured cost of one
        fine-tune epoch (``search.run.setup.auto_timeout``); 15 minutes for runs set up before
        that was measured."""
        if self.config.trial_timeout_s is not None:
            return self.config.trial_timeout_s
        return self.baseline.auto_timeout_s or LEGACY_TRIAL_TIMEOUT_S

    @property
    def storage_url(self) -> str:
        return self.run.storage_url(self.config)
