"""Data sources (edgeopt/data/source.py): NpzSource gives exactly what a DataBundle held, a
run records its data as a DataSpec (an old run.json's plain path reads as an npz), and the
study's data digest and the run's salt are what they were before sources, so a run
recorded before resumes."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import optuna
import pytest

from edgeopt.config import RunConfig
from edgeopt.data import DataKind, DataSpec, NpzSource, fingerprint_of, load_npz, open_source
from edgeopt.errors import ConfigError
from edgeopt.loading import ModelSpec
from edgeopt.records import RunRecord
from edgeopt.rundir import RunDir
from edgeopt.search.run.loop import run_search
from edgeopt.search.run.setup import prepare
from edgeopt.search.study.shared import SETTINGS, settings_of


def _old_digest(path: Path) -> str:
    """The study's data digest as edgeopt computed it before sources (shared._digest)."""
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def _old_salt(model: Path, data: Path, seed: int) -> str:
    """The run's salt as edgeopt computed it before sources (setup._salt)."""
    h = hashlib.sha256(model.read_bytes())
    h.update(data.read_bytes())
    h.update(str(seed).encode())
    return h.hexdigest()[:16]


def test_npz_source_gives_what_the_bundle_holds(tiny_data: Path) -> None:
    source, bundle = NpzSource.open(tiny_data), load_npz(tiny_data)
    assert source.kind is DataKind.NPZ
    assert source.input_shape == bundle.input_shape
    assert source.num_classes == bundle.num_classes == 10
    assert source.class_names is None
    assert source.splits == ("train", "val", "test")
    assert [source.count(s) for s in source.splits] == [200, 60, 60]
    for split in source.splits:
        x, y = bundle.split(split)
        np.testing.assert_array_equal(source.labels(split), y)
        assert source.labels(split).dtype == np.int64
        # streamed in order, the last batch short: together exactly the split
        parts = list(source.batches(split, 32))
        assert [len(px) for px, _ in parts] == [32] * (len(x) // 32) + [len(x) % 32]
        np.testing.assert_array_equal(np.concatenate([px for px, _ in parts]), x)
        np.testing.assert_array_equal(np.concatenate([py for _, py in parts]), y)
        assert all(px.dtype == np.float32 for px, _ in parts)
    assert source.max_label() == bundle.max_label()


def test_npz_subset_draws_what_the_stages_drew(tiny_data: Path) -> None:
    source, bundle = NpzSource.open(tiny_data), load_npz(tiny_data)
    # calibration (quantize_config.calibration_inputs) and Taylor (prune_ops.taylor_batches)
    idx = np.random.default_rng(3).permutation(200)[:64]
    x, y = source.subset("train", 64, seed=3)
    np.testing.assert_array_equal(x, bundle.x_train[idx])
    np.testing.assert_array_equal(y, bundle.y_train[idx])
    assert x.dtype == np.float32 and x.flags.c_contiguous
    again, _ = source.subset("train", 64, seed=3)
    np.testing.assert_array_equal(again, x)
    assert not np.array_equal(source.subset("train", 64, seed=4)[0], x)
    # no seed: the first samples (the parity sample x_val[:8], the probe's x_train[:64])
    x8, y8 = source.subset("val", 8, seed=None)
    np.testing.assert_array_equal(x8, bundle.x_val[:8])
    np.testing.assert_array_equal(y8, bundle.y_val[:8])
    assert len(source.subset("test", 1000, seed=0)[0]) == 60  # never more than the split


def test_npz_source_without_a_test_split(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    x = np.zeros((5, 3), np.float32)
    np.savez(path, x_train=x, y_train=np.arange(5), x_val=x[:2], y_val=np.array([0, 7]))
    source = NpzSource(path)  # loads on first use
    assert source.splits == ("train", "val")
    assert source.max_label() == ("val", 7)
    with pytest.raises(ValueError, match="no test split"):
        source.count("test")
    assert source.describe() == {
        "kind": "npz",
        "path": str(path),
        "input_shape": [3],
        "num_classes": 8,
        "class_names": None,
        "counts": {"train": 5, "val": 2},
    }


def test_npz_fingerprint_is_the_digest_studies_recorded(tiny_data: Path, tmp_path: Path) -> None:
    source = NpzSource(tiny_data)
    assert source.fingerprint() == _old_digest(tiny_data)
    assert "bundle" not in source.__dict__  # a digest of the file: its arrays stay unread
    copy = tmp_path / "elsewhere.npz"
    copy.write_bytes(tiny_data.read_bytes())
    assert NpzSource(copy).fingerprint() == source.fingerprint()  # content, not path
    assert fingerprint_of(DataSpec.npz(tiny_data)) == _old_digest(tiny_data)
    recorded = DataSpec("callable", fingerprint="sha256:0123456789abcdef")
    assert fingerprint_of(recorded) == "sha256:0123456789abcdef"
    with pytest.raises(ConfigError, match="no fingerprint"):
        fingerprint_of(DataSpec("callable"))


def test_data_spec_round_trips_and_never_records_a_callable() -> None:
    specs = [
        DataSpec.npz("/d/x.npz").with_fingerprint("sha256:00"),
        DataSpec("folder", "/d/imgs", recipe={"size": 32}, split={"ratio": 0.1, "seed": 0}),
        DataSpec("callable", fingerprint="sha256:11"),
    ]
    for spec in specs:
        text = json.loads(json.dumps(spec.to_dict()))
        assert DataSpec.from_dict(text) == spec
        assert "fingerprint" not in spec.search_key()
    assert specs[2].to_dict()["path"] is None
    # run.json is data: a callable named in it is refused, never imported
    with pytest.raises(ConfigError, match="never records or runs a callable"):
        DataSpec.from_dict({"kind": "callable", "path": "os:system"})
    with pytest.raises(ConfigError, match="unknown data kind 'url'"):
        DataSpec.from_dict({"kind": "url", "path": "http://x"})
    with pytest.raises(ConfigError, match="not a data spec"):
        DataSpec.from_dict({"path": "/d/x.npz"})  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="has no path"):
        DataSpec("npz")


def test_run_config_records_a_data_spec(tiny_data: Path) -> None:
    spec = DataSpec.npz(tiny_data).with_fingerprint(_old_digest(tiny_data))
    cfg = RunConfig(model=ModelSpec(path="/m.onnx"), targets=("cpu",), data=spec)
    d = json.loads(json.dumps(cfg.to_dict()))
    assert d["data"] == {
        "kind": "npz",
        "path": str(tiny_data),
        "recipe": None,
        "split": None,
        "fingerprint": _old_digest(tiny_data),
    }
    assert RunConfig.from_dict(d).data == spec
    assert RunRecord(config=d).data == str(tiny_data)  # what the report shows
    callable_cfg = RunConfig(
        model=ModelSpec(path="/m.onnx"), targets=("cpu",), data=DataSpec("callable")
    )
    assert callable_cfg.to_dict()["data"]["path"] is None
    assert RunRecord(config=callable_cfg.to_dict()).data == "a callable data source"


def _study(run: Path) -> optuna.Study:
    return optuna.load_study(study_name="edgeopt", storage=f"sqlite:///{run / 'study.db'}")


def test_a_run_recorded_before_data_specs_resumes(
    tmp_path: Path, model_files: dict, tiny_data: Path
) -> None:
    model = Path(model_files["onnx"])
    run = tmp_path / "run"
    cfg = RunConfig(
        model=ModelSpec(path=str(model)), data=str(tiny_data), targets=("mobile",), seed=3
    )
    assert cfg.data == DataSpec.npz(tiny_data)  # a path string is an npz's
    prepare(cfg, run)
    run_search(run, n_trials=2, timeout_s=None)
    recorded = json.loads(RunDir(run).run_file.read_text())
    assert recorded["data"]["fingerprint"] == _old_digest(tiny_data)
    # what edgeopt recorded before sources: the salt of every cache key, the study's digest
    assert RunDir(run).read_baseline().salt == _old_salt(model, tiny_data, 3)
    assert _study(run).user_attrs[SETTINGS]["data"] == _old_digest(tiny_data)
    assert settings_of(cfg)["data"] == _old_digest(tiny_data)
    # the run.json an edgeopt before sources wrote: the npz's path alone
    RunDir(run).run_file.write_text(json.dumps({**recorded, "data": str(tiny_data)}))
    old = RunConfig.from_dict(json.loads(RunDir(run).run_file.read_text()))
    assert old.data == DataSpec.npz(tiny_data)
    assert old.search_key() == RunConfig.from_dict(recorded).search_key()
    prepare(cfg, run)  # no "holds a run with different data", no "other settings"
    run_search(run, n_trials=3, timeout_s=None)  # the study's total
    assert len(_study(run).get_trials()) == 3
    assert json.loads(RunDir(run).run_file.read_text())["data"]["kind"] == "npz"


def test_open_source_opens_an_npz_and_says_what_it_cannot_open(tiny_data: Path) -> None:
    source = open_source(DataSpec.npz(tiny_data))
    assert isinstance(source, NpzSource) and source.count("val") == 60
    with pytest.raises(ConfigError, match="not a valid .npz"):
        open_source(DataSpec.npz(Path(__file__)))
    with pytest.raises(ConfigError, match="records no preprocessing"):
        open_source(DataSpec("folder", "/nowhere"))
    with pytest.raises(ConfigError, match="study never records"):  # no --data REF given
        open_source(DataSpec("callable"))
