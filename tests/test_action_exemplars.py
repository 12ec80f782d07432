"""Contrastive exemplars matched by action (AQA-7's action, FineDiving's dive number): feature stores carry
the optional `action` column (import, extract from a video store, extract from a source with a recipe),
the bank holds K exemplars per action from the training split only, a query is compared with the
exemplars of its own action (else of its difficulty, else the seeded fallback ones), and stores and
checkpoints without actions work as before."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from aqa_cli.checkpoints.io import LAST, load_checkpoint
from aqa_cli.checkpoints.restore import load_head
from aqa_cli.cli.commands import app
from aqa_cli.evaluation.evaluate import evaluate_checkpoint
from aqa_cli.evaluation.predict import predict_features
from aqa_cli.pipelines.import_features import import_features
from aqa_cli.stores.feature_store import FeatureStore, summarize_features
from aqa_cli.stores.video_store import VideoStore
from aqa_cli.training.dispatch import train
from tests.dataset_trees import needs_aqa7
from tests.test_long_integration import feature_config, write_long_layout

ACTIONS = ("207C", "109B", "5253B")
K = 2
SETTINGS = {"contrastive": True, "exemplars": K, "batch_size": 8, "epochs": 1, "lr": 3e-3}


def add_actions(root: Path, column: str = "action") -> None:
    """An action column in the layout's labels: one of ACTIONS by id; the last test video's action is
    one that no training video has."""
    lines = (root / "labels.csv").read_text().splitlines()
    last_test = max(i for i, line in enumerate(lines) if line.endswith(",test"))
    for i in range(1, len(lines)):
        action = "unseen" if i == last_test else ACTIONS[(i - 1) % len(ACTIONS)]
        lines[i] = f"{lines[i]},{action}"
    lines[0] += f",{column}"
    (root / "labels.csv").write_text("\n".join(lines) + "\n")


def poison_test_split(root: Path) -> None:
    """Test videos' features and scores replaced by noise (actions kept)."""
    rng = np.random.default_rng(5)
    lines = (root / "labels.csv").read_text().splitlines()
    for i, line in enumerate(lines[1:], start=1):
        sample, difficulty, _, split, action = line.split(",")
        if split == "test":
            path = root / "feats" / f"{sample}.npy"
            np.save(path, 50 * rng.normal(size=np.load(path).shape).astype(np.float32))
            lines[i] = f"{sample},{difficulty},{rng.uniform(0, 30):.4f},{split},{action}"
    (root / "labels.csv").write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def stores(tmp_path_factory) -> dict[str, Path]:
    """Feature stores of the generated layout: with an `action` column, the same with its test split
    poisoned, and without actions (an old-style store)."""
    made = {}
    for name in ("actions", "poisoned", "plain"):
        root = tmp_path_factory.mktemp(name)
        write_long_layout(root)
        if name != "plain":
            add_actions(root)
        if name == "poisoned":
            poison_test_split(root)
        made[name] = import_features(root, root / "store.h5", dtype="float32").out
    return made


@pytest.fixture(scope="module")
def runs(stores: dict[str, Path], tmp_path_factory) -> dict[str, Path]:
    """One short contrastive run (attn) per store: its last checkpoint."""
    out = {}
    for name, store in stores.items():
        run = tmp_path_factory.mktemp(f"run-{name}")
        train(feature_config(store, run, "attn", **SETTINGS))
        out[name] = run / LAST
    return out


def test_import_reads_the_action_column_and_info_counts_it(stores: dict[str, Path], tmp_path: Path) -> None:
    with FeatureStore(stores["actions"]) as store:
        actions = store.column("action")
        ids = store.column("id")
    labels = (stores["actions"].parent / "labels.csv").read_text().splitlines()[1:]
    assert actions.tolist() == [line.split(",")[-1] for line in labels]
    assert summarize_features(stores["actions"])["actions"]["207C"] == (actions == "207C").sum() > 0
    with FeatureStore(stores["plain"]) as store:  # no column: every action unknown
        assert "action" not in store.file["samples"] and set(store.column("action")) == {""}
    assert summarize_features(stores["plain"])["actions"] == {}
    root = stores["actions"].parent  # FineDiving's name for it: dive_number
    renamed = tmp_path / "renamed"
    shutil.copytree(root, renamed, ignore=shutil.ignore_patterns("*.h5"))
    text = (renamed / "labels.csv").read_text()
    (renamed / "labels.csv").write_text(text.replace(",action\n", ",dive_number\n", 1))
    with FeatureStore(import_features(renamed, renamed / "store.h5").out) as store:
        assert store.column("action").tolist() == actions.tolist() and store.score_columns == ["score"]
        assert store.column("id").tolist() == ids.tolist()


def test_the_bank_holds_k_exemplars_per_action_from_training_videos_only(
    stores: dict[str, Path], runs: dict[str, Path]
) -> None:
    clean, poisoned = (load_checkpoint(runs[name]) for name in ("actions", "poisoned"))
    contrastive = clean["model_config"]["contrastive"]
    assert (contrastive["rule"], contrastive["exemplars"], contrastive["seed"]) == ("action", K, 0)
    assert contrastive["actions"] == sorted(ACTIONS)  # "unseen" is a test video's only
    with FeatureStore(stores["actions"]) as store:
        split = dict(zip(store.column("id"), store.column("split"), strict=True))
        action = dict(zip(store.column("id"), store.column("action"), strict=True))
    assert {split[sample] for sample in contrastive["ids"]} == {"train"}
    head = load_head(clean, runs["actions"])
    entry_actions = head.bank_action.tolist()
    for index, name in enumerate(contrastive["actions"]):  # K per action, each of that action
        members = [
            sample for sample, code in zip(contrastive["ids"], entry_actions, strict=True) if code == index
        ]
        assert len(members) == K and {action[sample] for sample in members} == {name}
    # K fallback entries and K per difficulty (2 and 3) besides
    assert len(contrastive["ids"]) == K * (1 + len(ACTIONS) + 2)
    # poisoned test videos change neither the bank nor any weight
    assert poisoned["model_config"]["contrastive"] == contrastive
    for key, value in clean["model"].items():
        assert np.array_equal(value.numpy(), poisoned["model"][key].numpy(), equal_nan=True), key


def test_a_query_is_compared_with_the_exemplars_of_its_action_only(runs: dict[str, Path]) -> None:
    payload = load_checkpoint(runs["actions"])
    head = load_head(payload, runs["actions"]).eval()
    names = head.exemplar_actions
    entry_action = head.bank_action
    fallback = torch.isnan(head.bank_group) & (entry_action < 0)
    nan = torch.tensor([float("nan")] * 4)
    weights = head.exemplar_weights(
        torch.tensor([2.0, 3.0, 2.0, float("nan")]), 4, ["109B", "207C", "unseen", ""]
    )
    assert torch.equal(weights[0] > 0, entry_action == names.index("109B"))
    assert torch.equal(weights[1] > 0, entry_action == names.index("207C"))
    assert torch.equal(weights[2] > 0, head.bank_group == 2.0)  # an unseen action: its difficulty's
    assert torch.equal(weights[3] > 0, fallback)  # nothing known: the seeded fallback entries
    assert torch.allclose(weights.sum(dim=1), torch.ones(4))
    assert torch.equal(head.exemplar_weights(nan, 4, None) > 0, fallback.expand(4, -1))

    # A tiny forward: the quality is the mean over the action's exemplars of exemplar quality + predicted
    # difference, and exemplars of other actions do not change it.
    features = torch.randn(2, 5, head.feature_dim)
    with torch.no_grad():
        before = head(features, torch.tensor([2.0, 2.0]), None, ["109B", "207C"]).quality
        mine = entry_action == names.index("109B")
        bank_mask = torch.arange(head.bank_features.shape[1])[None] < head.bank_clips[:, None]
        bank = head.direct(head.bank_features, bank_mask)[3][mine]
        pooled = head.direct(features[:1], None)[3]
        low, high = head.quality_range.tolist()
        expected = (head.bank_quality[mine] + head.pair_differences(pooled, bank)[0] * (high - low)).mean()
        torch.testing.assert_close(before[0], expected)
        head.bank_features[entry_action == names.index("207C")] += 5.0  # another action's exemplars
        after = head(features, torch.tensor([2.0, 2.0]), None, ["109B", "207C"]).quality
    assert after[0] == before[0] and after[1] != before[1]


def test_eval_matches_each_video_by_its_stored_action(stores: dict[str, Path], runs: dict[str, Path]) -> None:
    payload = load_checkpoint(runs["actions"])
    head = load_head(payload, runs["actions"]).eval()
    with FeatureStore(stores["actions"]) as store:
        rows = np.flatnonzero(store.column("split") == "test").tolist()
        actions = store.column("action")[rows].tolist()
        features = [torch.from_numpy(store.features(row)) for row in rows]
        difficulty = torch.from_numpy(store.column("difficulty")[rows]).float()
    found = predict_features(head, stores["actions"], rows, "score", torch.device("cpu"))
    padded = torch.nn.utils.rnn.pad_sequence(features, batch_first=True)
    mask = torch.arange(padded.shape[1])[None] < torch.tensor([len(f) for f in features])[:, None]
    with torch.no_grad():
        by_action = head(padded, difficulty, mask, actions).score.numpy()
        by_difficulty = head(padded, difficulty, mask, None).score.numpy()
    np.testing.assert_allclose(found.score, by_action, rtol=1e-5)
    assert not np.allclose(found.score, by_difficulty)
    assert np.isfinite(evaluate_checkpoint(None, runs["actions"], None, "test", "cpu", 8)["rho"])


def test_a_store_without_actions_trains_and_evaluates_as_before(runs: dict[str, Path]) -> None:
    payload = load_checkpoint(runs["plain"])
    contrastive = payload["model_config"]["contrastive"]
    assert contrastive["rule"] == "difficulty" and "actions" not in contrastive
    head = load_head(payload, runs["plain"])
    assert "bank_action" not in dict(head.named_buffers())
    difficulty = torch.tensor([3.0, float("nan")])
    assert torch.equal(
        head.exemplar_weights(difficulty, 2, ["207C", "x"]), head.exemplar_weights(difficulty, 2)
    )
    assert np.isfinite(evaluate_checkpoint(None, runs["plain"], None, "test", "cpu", 8)["rho"])


def test_score_takes_one_action_for_all_or_one_per_video(aqa, tmp_path: Path) -> None:
    videos = [tmp_path / "a.mp4", tmp_path / "b.mp4"]
    refused = aqa("score", *videos, "--action", "207C", "--action", "109B", "--action", "5253B", check=2)
    lines = [line for line in refused.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "3 --action values for 2 videos" in lines[0], refused.stderr


@needs_aqa7
def test_an_extract_from_an_aqa7_video_store_carries_its_actions(tmp_path: Path) -> None:
    """A video store of four AQA-7 samples (two actions) -> `aqa extract` (frozen backbone)."""
    from aqa_cli.pipelines.extract import extract_features
    from aqa_cli.pipelines.options import ExtractOptions, PreprocessOptions
    from aqa_cli.pipelines.preprocess import run_preprocess
    from tests.test_aqa7 import SAMPLE_FRAMES, build, chosen

    samples = chosen()[:4]  # diving and gym_vault, one train and one test sample each
    root = build(tmp_path / "aqa7", False, samples)
    videos = tmp_path / "aqa7.h5"
    run_preprocess(root, videos, PreprocessOptions(frames=SAMPLE_FRAMES, workers=1))  # the others: missing
    expected = [action for action, _ in samples]
    with VideoStore(videos) as store:
        assert store.column("action").tolist() == expected
    options = ExtractOptions(str(videos), str(tmp_path / "frozen.h5"), depth=10, conv="3d", clip=4, frames=8)
    extract_features(dataclasses.replace(options, crop=64, device="cpu", workers=0))
    with FeatureStore(tmp_path / "frozen.h5") as store:
        assert store.column("action").tolist() == expected
        assert [sample.split("/")[0] for sample in store.column("id")] == expected


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    """Eight short synthetic videos (six train, two test) in a manifest with an action column."""
    from aqa_cli.media.synth import write_synthetic_dataset

    path = write_synthetic_dataset(tmp_path_factory.mktemp("videos"), n_videos=8, n_frames=16, seed=0)
    lines = path.read_text().splitlines()
    path.write_text(
        "\n".join([lines[0] + ",action"] + [f"{line},{ACTIONS[i % 2]}" for i, line in enumerate(lines[1:])])
        + "\n"
    )
    return path


@pytest.fixture(scope="module")
def recipe_store(manifest: Path, tmp_path_factory) -> Path:
    """`aqa extract MANIFEST --recipe` in two shards, merged as `aqa features merge` does."""
    from aqa_cli.pipelines.options import StreamExtractOptions
    from aqa_cli.pipelines.stream_extract import extract_from_videos
    from aqa_cli.stores.merge import merge_feature_stores

    out = tmp_path_factory.mktemp("recipe")
    shards = [out / f"shard{k}.h5" for k in range(2)]
    for k, shard in enumerate(shards):
        options = StreamExtractOptions(
            str(manifest), "tiny-test", clip=4, out=str(shard), shard=f"{k}/2", batch_size=32, workers=1
        )
        assert not extract_from_videos(options).failed
    merge_feature_stores(shards, out / "merged.h5")
    return out / "merged.h5"


def test_a_recipe_extract_and_its_merge_carry_the_manifest_actions(recipe_store: Path) -> None:
    expected = [ACTIONS[i % 2] for i in range(8)]
    with FeatureStore(recipe_store) as store:
        assert store.column("action").tolist() == expected
        assert store.column("id").tolist() == [f"dive_{i:03d}" for i in range(8)]
    for k in range(2):  # each shard has its own share of the actions
        with FeatureStore(recipe_store.with_name(f"shard{k}.h5")) as store:
            assert store.column("action").tolist() == expected[k::2]
    shown = CliRunner().invoke(app, ["features", "info", str(recipe_store)], env={"COLUMNS": "200"})
    text = " ".join(shown.output.split())
    assert "actions │ 2: 109B 4, 207C 4" in text


def test_score_matches_a_raw_video_by_the_given_action(
    manifest: Path, recipe_store: Path, tmp_path: Path
) -> None:
    """A contrastive head on the recipe's features scores a raw video with `--action` by that action's
    exemplars: the same as the head on the video's stored features with that action."""
    from aqa_cli.evaluation.score import score_videos

    train(feature_config(recipe_store, tmp_path, "avg", **{**SETTINGS, "exemplars": 1}))
    checkpoint = tmp_path / LAST
    head = load_head(load_checkpoint(checkpoint), checkpoint).eval()
    assert head.exemplar_actions == sorted(ACTIONS[:2])
    video = manifest.parent / "dive_007.mp4"  # a test video
    with FeatureStore(recipe_store) as store:
        features = torch.from_numpy(store.features(7))[None]
        difficulty = torch.from_numpy(store.column("difficulty")[7:8]).float()
    for action in ACTIONS[:2]:
        [scored] = score_videos(
            [video], [float(difficulty)], checkpoint=checkpoint, device="cpu", actions=[action]
        )
        with torch.no_grad():
            expected = head(features, difficulty, None, [action]).quality
        assert scored["action"] == action
        assert scored["quality"] == pytest.approx(float(expected), rel=1e-5)
    [plain] = score_videos([video], [float(difficulty)], checkpoint=checkpoint, device="cpu")
    with torch.no_grad():
        assert plain["quality"] == pytest.approx(float(head(features, difficulty).quality), rel=1e-5)
    assert plain["action"] is None
