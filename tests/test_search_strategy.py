"""How the search spends its trials on real models: expert seeds first, sibling ONNX variants
of every torch build, the median stopping rule among similarly pruned fine-tunes, the
pruning pre-flight and the epoch cost measured at setup, and hopeless candidates kept off
the printed front. Real runs through the CLI on tiny models, real Optuna studies."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
import torch
from click.testing import CliRunner
from optuna.trial import TrialState

from edgeopt import zoo
from edgeopt.cli import main
from edgeopt.loading import save_bundle
from edgeopt.search.run.collect import load_run
from edgeopt.search.strategy.halving import (
    MIN_PEERS,
    PROMOTED_ATTR,
    below_bar,
    promotion,
    rung_bars,
)
from edgeopt.search.strategy.seeds import SEED_ATTR, SIBLING_ATTR, torch_params
from edgeopt.search.study.lifecycle import counted_trials
from edgeopt.stages import STAGES
from edgeopt.stages.recipes import RECIPES

RUNGS_ATTR = STAGES["finetune"].fidelity.history_key  # type: ignore[union-attr]


def _study(run: Path) -> optuna.Study:
    return optuna.load_study(study_name="edgeopt", storage=f"sqlite:///{run / 'study.db'}")


def _optimize(model: Path, data: Path, run: Path, trials: int, *extra: str) -> object:
    args = ["optimize", model, "--data", data, "--target", "cpu", "--trials", trials]
    result = CliRunner().invoke(main, [str(a) for a in [*args, "--out", run, *extra]])
    assert result.exit_code in (0, 1), result.output
    return result


@pytest.fixture(scope="module")
def seeded_run(
    tmp_path_factory: pytest.TempPathFactory, model_files: dict, tiny_data: Path
) -> Path:
    run = tmp_path_factory.mktemp("strategy") / "run"
    _optimize(model_files["bundle_wide"], tiny_data, run, 4, "--no-report")
    return run


def test_expert_seed_runs_after_the_baselines_and_its_variant_reuses_the_build(
    seeded_run: Path,
) -> None:
    trials = [t for t in _study(seeded_run).get_trials() if t.state != TrialState.WAITING]
    assert [t.user_attrs.get("baseline") for t in trials[:2]] == ["unchanged", "int8"]
    seed = trials[2]
    tag, ratio, epochs = (
        RECIPES[0].tag,
        RECIPES[0].params["prune.ratio"],
        RECIPES[0].params["finetune.epochs"],
    )
    assert seed.user_attrs[SEED_ATTR] == tag
    cand = seed.user_attrs["candidate"]
    assert cand["prune"]["ratio"] == ratio
    assert cand["finetune"]["epochs"] == epochs and cand["finetune"]["distill"] is True
    assert cand["quantize"]["mode"] == "int8_static"
    # the seed's fine-tune recorded its validation accuracy per epoch (peers for halving)
    assert 1 <= len(seed.user_attrs[RUNGS_ATTR]) <= epochs
    # the next trial is the same torch phase as fp32_opt: a cache hit, not a second build
    sibling = trials[3]
    assert sibling.state == TrialState.COMPLETE
    assert sibling.user_attrs[SIBLING_ATTR] == seed.number
    assert sibling.user_attrs["cache_hit"] is True
    sib = sibling.user_attrs["candidate"]
    assert sib["prune"] == cand["prune"] and sib["finetune"] == cand["finetune"]
    assert sib["quantize"]["mode"] == "fp32_opt"
    assert sibling.user_attrs["build_s"] < seed.user_attrs["build_s"]


def test_setup_measures_the_epoch_cost_and_the_timeout_follows_it(seeded_run: Path) -> None:
    baseline = json.loads((seeded_run / "baseline" / "baseline.json").read_text())
    prune, finetune = baseline["stage_facts"]["prune"], baseline["stage_facts"]["finetune"]
    assert prune["prunable"] is True and prune["ignored"] == []
    qat = baseline["stage_facts"]["qat"]
    assert finetune["epoch_s"] > 0 and qat["epoch_s"] > 0
    # the longest fine-tune (8 rounds) and the longest QAT (4 epochs), each twice
    stages_s = 16 * finetune["epoch_s"] + 8 * qat["epoch_s"]
    assert baseline["auto_timeout_s"] == pytest.approx(max(180.0, stages_s + 120))
    assert json.loads((seeded_run / "run.json").read_text())["trial_timeout_s"] is None


def test_median_stopping_rule_stops_a_fine_tune_that_trails_its_peers(
    seeded_run: Path, tmp_path: Path, model_files: dict, tiny_data: Path
) -> None:
    import shutil

    run = tmp_path / "run"
    shutil.copytree(seeded_run, run)
    study = _study(run)
    template = next(t for t in study.get_trials() if t.user_attrs.get(SEED_ATTR))
    # peers at the same pruning ratio that were perfect after every epoch
    for _ in range(MIN_PEERS):
        study.add_trial(
            optuna.trial.create_trial(
                params=template.params,
                distributions=template.distributions,
                values=template.values,
                user_attrs={RUNGS_ATTR: [1.0, 1.0, 1.0]},
            )
        )
    params = {**template.params, "finetune.epochs": 4}
    study.enqueue_trial(params)
    n = len([t for t in study.get_trials() if t.state != TrialState.WAITING])
    _optimize(model_files["bundle_wide"], tiny_data, run, n + 1, "--no-report")
    done = [t for t in _study(run).get_trials() if t.params.get("finetune.epochs") == 4]
    assert len(done) == 1 and done[0].state == TrialState.PRUNED
    assert "median stopping rule" in done[0].user_attrs["stopped_reason"]
    # judged at the same fraction of its schedule: its epoch 1 of 4 matches no epoch of the
    # 3-epoch peers, its epoch 2 of 4 their epoch 1 (it stopped at epoch 1 before)
    assert len(done[0].user_attrs[RUNGS_ATTR]) == 2


def test_rung_bars_compare_only_similarly_pruned_peers() -> None:
    peers = [({"prune.ratio": 0.5}, [0.5, 0.8, 0.9, 0.95])] * 2 + [
        ({"prune.ratio": 0.55}, [0.6, 0.7]),
        ({"prune.ratio": 0.2}, [0.99] * 4),  # bigger models: not peers of a 0.5 prune
        ({"prune.ratio": 0.5}, []),
    ]
    bars = rung_bars(peers, 0.5)
    assert bars == {1: 0.5, 2: 0.8}  # rung 4: only two peers got there
    assert below_bar([0.4], bars) is not None
    assert below_bar([0.5], bars) is None
    assert below_bar([0.85, 0.7], bars) is None  # the best so far counts
    assert below_bar([0.1, 0.2, 0.3], bars) is None  # no bar at epoch 3
    assert rung_bars(peers, 0.0) == {}


def test_hopeless_front_member_is_hidden_from_the_front_and_the_pick(
    seeded_run: Path, tmp_path: Path
) -> None:
    import shutil

    run = tmp_path / "run"
    shutil.copytree(seeded_run, run)
    study = _study(run)
    best = next(t for t in study.best_trials if not t.user_attrs.get("baseline"))
    attrs = {**best.user_attrs, "val_accuracy": 0.0}
    attrs.pop(SEED_ATTR, None)
    # Pareto-optimal on latency and size, useless on accuracy
    study.add_trial(
        optuna.trial.create_trial(
            params=best.params,
            distributions=best.distributions,
            values=[0.0, best.values[1] * 0.5, best.values[2] * 0.5],
            user_attrs=attrs,
        )
    )
    hopeless = study.trials[-1].number
    assert hopeless in {t.number for t in study.best_trials}
    records = load_run(run)
    assert records["hidden_hopeless"] == [hopeless]
    rec = next(t for t in records["trials"] if t["number"] == hopeless)
    assert rec["hopeless"] is True and rec["on_front"] is False
    result = CliRunner().invoke(main, ["report", str(run), "--format", "md,json"])
    assert result.exit_code == 0, result.output
    md = (run / "report" / "report.md").read_text()
    assert f"trial {hopeless}) are hidden" in md
    summary = json.loads((run / "report" / "report.json").read_text())
    assert summary["pick"]["number"] != hopeless
    assert hopeless not in summary["front"]


def test_preflight_leaves_shuffle_coupled_layers_whole(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = zoo.shufflenetv2_cifar(width_mult=0.125).eval()
    path = save_bundle(
        model,
        tmp_path / "shufflenet.pt",
        arch="edgeopt.zoo:shufflenetv2_cifar",
        arch_kwargs={"width_mult": 0.125},
        input_shape=(3, 32, 32),
    )
    args = ["optimize", str(path), "--target", "cpu", "--trials", "1", "--no-report"]
    result = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    baseline = json.loads((tmp_path / "r" / "baseline" / "baseline.json").read_text())
    prune = baseline["stage_facts"]["prune"]
    assert prune["prunable"] is True, prune.get("note")
    assert prune["ignored"]  # the layers feeding the channel splits and shuffles
    assert f"pruning: {len(prune['ignored'])} layer(s) left whole" in result.output


def test_promotion_rule() -> None:
    """Twice the epochs for a front member that was still improving, below the original,
    on a continuable schedule; nothing otherwise."""
    params = {"prune.ratio": 0.5, "finetune.epochs": 3, "finetune.schedule": "wsd"}
    kw = {"on_front": True, "val_accuracy": 0.90, "original_accuracy": 0.95}
    assert promotion(params, [0.8, 0.85, 0.9], **kw) == {**params, "finetune.epochs": 6}
    assert promotion({**params, "finetune.epochs": 5}, [0.9] * 5, **kw)["finetune.epochs"] == 8
    assert promotion(params, [0.8, 0.85, 0.9], **{**kw, "on_front": False}) is None
    assert promotion(params, [0.8, 0.9, 0.85], **kw) is None  # no longer improving
    assert promotion(params, [0.8, 0.85], **kw) is None  # stopped early on patience
    assert promotion(params, [0.8, 0.85, 0.9], **{**kw, "val_accuracy": 0.948}) is None
    assert promotion({**params, "finetune.schedule": "cosine"}, [0.8, 0.85, 0.9], **kw) is None
    assert promotion({**params, "prune.ratio": 0.0}, [0.8, 0.85, 0.9], **kw) is None
    assert promotion({**params, "finetune.epochs": 8}, [0.9] * 8, **kw) is None


def test_a_promotion_is_queued_once_and_a_sibling_counts_with_its_builders_history(
    tmp_path: Path,
) -> None:
    """On a real study: a sibling on the front (a cache hit, no fine-tune history of its own)
    is promoted on its builder's history; the promotion, once failed (timed out, say), is
    not queued again at the next ask."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    from edgeopt.search.study.lifecycle import _enqueue_next_promotion

    study = optuna.create_study(
        storage=f"sqlite:///{tmp_path / 'study.db'}",
        directions=["maximize", "minimize", "minimize"],
    )
    dists = {
        "prune.ratio": FloatDistribution(0.0, 0.7, step=0.05),
        "finetune.epochs": IntDistribution(1, 8),
        "finetune.schedule": CategoricalDistribution(["wsd", "cosine"]),
        "quantize.mode": CategoricalDistribution(["int8_static", "fp32_opt"]),
    }
    torch_part = {"prune.ratio": 0.5, "finetune.epochs": 2, "finetune.schedule": "wsd"}
    for mode, values, attrs in (
        ("int8_static", [0.9, 2.0, 1.0], {RUNGS_ATTR: [0.8, 0.9]}),  # dominated by its sibling
        ("fp32_opt", [0.9, 1.0, 1.0], {SIBLING_ATTR: 0}),
    ):
        study.add_trial(
            optuna.trial.create_trial(
                params={**torch_part, "quantize.mode": mode},
                distributions=dists,
                values=values,
                user_attrs={**attrs, "val_accuracy": 0.9},
            )
        )
    _enqueue_next_promotion(study, study.get_trials(), original_accuracy=0.99)
    queued = study.get_trials(states=(TrialState.WAITING,))
    assert [t.user_attrs[PROMOTED_ATTR] for t in queued] == [1]
    promoted = study.ask()
    assert promoted.suggest_int("finetune.epochs", 1, 8) == 4
    study.tell(promoted, state=TrialState.FAIL)
    _enqueue_next_promotion(study, study.get_trials(), original_accuracy=0.99)
    assert not study.get_trials(states=(TrialState.WAITING,))


def test_competitive_short_fine_tune_is_promoted_and_continues_from_its_checkpoint(
    seeded_run: Path, tmp_path: Path, model_files: dict, tiny_data: Path
) -> None:
    """Once every expert seed has run (breadth before depth: not before), a competitive
    build (on the front; the original's recorded accuracy is set out of reach) is promoted
    to twice its epochs, and the promoted trial continues from its checkpoint."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(seeded_run, run)
    baseline_file = run / "baseline" / "baseline.json"
    baseline = json.loads(baseline_file.read_text())
    baseline_file.write_text(json.dumps({**baseline, "val_accuracy": 1.01}))
    study = _study(run)
    template = next(t for t in study.get_trials() if t.user_attrs.get(SEED_ATTR))
    params = {
        **template.params,
        "prune.ratio": 0.7,
        "finetune.epochs": 1,
        "finetune.schedule": "constant",
    }
    study.enqueue_trial(params)
    n = counted_trials(study)
    assert not study.get_trials(states=(TrialState.WAITING,))[1:]  # only the short one
    # the short trial and its sibling, then the next seed: it comes before any promotion
    _optimize(model_files["bundle_wide"], tiny_data, run, n + 3, "--no-report")
    trials = _study(run).get_trials()
    short = next(t for t in trials if t.params == params)
    assert short.state == TrialState.COMPLETE, short.user_attrs
    later = [t.user_attrs for t in trials if t.number > short.number and t.state.is_finished()]
    assert [SIBLING_ATTR in a for a in later] == [True, False]
    assert later[1].get(SEED_ATTR) == RECIPES[1].tag
    assert not [t for t in trials if PROMOTED_ATTR in t.user_attrs]
    # the last seed failed (as on a model pruning cannot handle): the promotion comes next,
    # after the sibling of the seed that ran
    study.add_trial(
        optuna.trial.create_trial(state=TrialState.FAIL, user_attrs={SEED_ATTR: RECIPES[2].tag})
    )
    _optimize(model_files["bundle_wide"], tiny_data, run, n + 7, "--no-report")
    trials = _study(run).get_trials()
    # one competitive build is promoted (which one depends on the measured front: every
    # build here is still improving), continuing from its checkpoint
    promoted = [t for t in trials if PROMOTED_ATTR in t.user_attrs]
    assert promoted and promoted[0].state == TrialState.COMPLETE
    source = trials[promoted[0].user_attrs[PROMOTED_ATTR]]
    epochs = 2 * source.params["finetune.epochs"]
    assert torch_params(promoted[0].params) == torch_params(
        {**source.params, "finetune.epochs": epochs}
    )
    trained = promoted[0].user_attrs["info"]["finetune.train_result"]
    # it trained on from the checkpoint (up to its budget, or a plateau's patience)
    assert 1 <= trained["resumed_epochs"] < trained["epochs_run"] <= epochs
    assert promoted[0].user_attrs["cache_hit"] is False
    assert len(promoted[0].user_attrs[RUNGS_ATTR]) == trained["epochs_run"]


def test_plain_search_queues_nothing_of_its_own(
    tmp_path: Path, model_files: dict, tiny_data: Path
) -> None:
    """--plain-search (the naive baseline of benchmarks/run.py; with --sampler tpe the
    TPE-only one): after the baselines every trial comes from the sampler, none is a seed, a
    sibling or a promotion."""
    run = tmp_path / "run"
    flags = ("--no-report", "--plain-search", "--sampler", "tpe")
    _optimize(model_files["bundle_wide"], tiny_data, run, 4, *flags)
    trials = _study(run).get_trials()
    assert len(trials) == 4
    assert [t.user_attrs.get("baseline") for t in trials[:2]] == ["unchanged", "int8"]
    for t in trials[2:]:
        assert not {SEED_ATTR, SIBLING_ATTR, PROMOTED_ATTR, "baseline"} & set(t.user_attrs)
    recorded = json.loads((run / "run.json").read_text())
    assert recorded["plain_search"] is True and recorded["sampler"] == "tpe"


def test_sibling_variants_follow_the_target() -> None:
    """fp16 is a sibling where the profile offers it (mobile), never on the cpu profile,
    where it is slower; fp32_opt and the by-hand int8 are siblings on both."""
    from model_facts import facts as model_facts

    from edgeopt.profiles import load_profile
    from edgeopt.stages import STAGES

    facts = model_facts()
    modes = {
        t: [v["quantize.mode"] for v in STAGES["quantize"].variants(load_profile(t), facts)]
        for t in ("cpu", "mobile")
    }
    assert modes == {
        "cpu": ["fp32_opt", "int8_static"],
        "mobile": ["fp32_opt", "fp16", "int8_static"],
    }
