"""Several datasets in one run (config.data.sources): the same hold-outs as each source's run
alone, draws by weight, pooled validation with each source's Dice, and config errors that name
the source's key."""

import json

import _train_helpers as helpers
import data_fixtures as fx
import numpy as np
import pytest

from hanet_jax.data import pipeline
from hanet_jax.train import input as train_data
from hanet_jax.train import recipes
from hanet_jax.train.config import ConfigError, validate_config


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    base = tmp_path_factory.mktemp("sources")
    fx.write_processed(str(base / "A"), "train", n=20)
    fx.write_processed(str(base / "B"), "train", n=10, first_seed=100)
    return {"a": str(base / "A"), "b": str(base / "B")}


def _joint(roots, weights=(1.0, 1.0), **overrides):
    config = helpers.tiny_config(**overrides)
    config.data.source, config.data.test_fraction, config.batch_size = "folder", 0.2, 4
    for (name, root), weight in zip(roots.items(), weights):
        config.data.sources[name] = recipes.source(root=root, group_by="content", weight=weight)
    return config


def _single(roots, name, **overrides):
    config = helpers.tiny_config(**overrides)
    config.data.source, config.data.test_fraction, config.batch_size = "folder", 0.2, 4
    config.data.root, config.data.group_by = roots[name], "content"
    return config


def test_a_joint_run_holds_out_what_each_source_alone_holds_out(roots):
    joint = train_data.build_data(_joint(roots))
    assert [name for name, _ in joint.val_sources] == ["a", "b"]
    for name in roots:
        alone = train_data.build_data(_single(roots, name))
        record = joint.split_record["sources"][name]
        assert record["test"] and record["test"] == alone.split_record["test"]
        assert record["val"] == alone.split_record["val"]
        own = pipeline.source_of(joint.train, name)
        assert own.stems == alone.train.stems
        np.testing.assert_array_equal(own.images, alone.train.images)


@pytest.mark.parametrize("weights", [(1.0, 1.0), (3.0, 1.0)])
def test_an_epoch_draws_each_source_by_its_weight_without_repeats_within_a_pass(roots, weights):
    data = train_data.build_data(_joint(roots, weights)).train
    (_, a0, a1, _), (_, b0, b1, _) = data.sources
    n = len(data)
    for epoch in range(3):
        order = pipeline.epoch_order(data, seed=5, epoch=epoch)
        assert len(order) == n
        np.testing.assert_array_equal(order, pipeline.epoch_order(data, seed=5, epoch=epoch))
        index = order % n
        from_a = ((index >= a0) & (index < a1)).sum()
        assert abs(from_a - n * weights[0] / sum(weights)) <= 1
        for start, stop in ((a0, a1), (b0, b1)):  # pass p of a source: each example once
            draws = order[(index >= start) & (index < stop)]
            passes = draws // n
            for p in np.unique(passes):
                in_pass = draws[passes == p] % n
                assert len(np.unique(in_pass)) == len(in_pass)
            assert len(np.unique(draws)) == len(draws)  # repeats are distinct draws


@pytest.mark.slow
def test_joint_training_reports_each_sources_validation(roots, tmp_path):
    from hanet_jax.train import loop

    config = _joint(roots, num_epochs=1, num_overlays=0)
    result = loop.train_and_evaluate(config, str(tmp_path))
    summary = json.loads((tmp_path / "summary.json").read_text())
    row = summary["history"][0]
    assert set(row["val_sources"]) == {"a", "b"}
    sizes = {name: len(d) for name, d in train_data.build_data(config).val_sources}
    pooled = sum(row["val_sources"][n]["loss"] * s for n, s in sizes.items()) / sum(sizes.values())
    assert row["val_loss"] == pytest.approx(pooled, rel=1e-5)  # weighted by validation sizes
    assert set(summary["best_val_dice_by_source"]) == {"a", "b"}
    split = json.loads((tmp_path / "data_split.json").read_text())
    assert set(split["sources"]) == {"a", "b"} and result.summary["epochs"] == 1


def test_a_bad_source_names_its_key(roots):
    config = _joint(roots)
    config.data.sources.b.root = ""
    with pytest.raises(ConfigError, match=r"config\.data\.sources\.b\.root"):
        validate_config(config)
    config = _joint(roots)
    config.data.sources.a.weight = 0.0
    with pytest.raises(ConfigError, match=r"config\.data\.sources\.a\.weight"):
        validate_config(config)


@pytest.mark.slow
def test_eval_scores_one_source_of_a_joint_run_and_a_model_on_another_runs_test_set(
        roots, tmp_path):
    from hanet_jax.eval import evaluate
    from hanet_jax.train import loop

    joint, single = tmp_path / "joint", tmp_path / "a"
    loop.train_and_evaluate(_joint(roots, num_epochs=1, num_overlays=0), str(joint))
    loop.train_and_evaluate(_single(roots, "a", num_epochs=1, num_overlays=0), str(single))
    split = json.loads((joint / "data_split.json").read_text())["sources"]

    def score(checkpoint, **kwargs):
        cfg = evaluate.EvalConfig(checkpoint=str(checkpoint), data_dir=None, layout=None,
                                  split="test", out=str(tmp_path / "r.json"), run_split="test",
                                  threshold_from_split="val", bootstrap=50, **kwargs)
        return evaluate.run(cfg, log=lambda _: None)

    on_b = score(joint, source="b")  # threshold from the joint run's own (pooled) validation
    assert on_b["n_images"] == len(split["b"]["test"]) and on_b["data"]["root"] == roots["b"]
    cross = score(single, split_from=str(joint), source="b")  # A's model on B's test set
    assert cross["n_images"] == len(split["b"]["test"]) and cross["data"]["root"] == roots["b"]
    with pytest.raises(evaluate.EvalError, match="--source"):
        score(joint)
