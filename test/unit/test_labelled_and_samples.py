"""The promotion gate's ground truth (labelled sets scored with real models) and disagreement samples."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from robot_model_deployer.bundle.loader import BundleDir, load_bundle_dir
from robot_model_deployer.cli.main import main
from robot_model_deployer.inference.engine import InferenceEngine
from robot_model_deployer.inference.postprocess import Prediction
from robot_model_deployer.testing.models import COLOUR_LABELS, classifier_manifest, colour_classifier
from robot_model_deployer.testing.quant_models import colour_images, write_image_bundle
from robot_model_deployer.validation.labelled import compare_on_labelled, has_labelled_set
from robot_model_deployer.validation.samples import list_samples, samples_dir, write_sample
from robot_model_deployer.validation.shadow_report import Disagreement, LabelledSource


def labelled_bundle(root: Path, model, count: int = 9, expected: str | None = None) -> BundleDir:
    """A bundle whose validation image i is colour i % 3, with those labels in expected.yaml."""
    root.mkdir(parents=True)
    text = expected if expected is not None else "".join(
        f"validation/{i:03d}.png: {{class_id: {i % 3}}}\n" for i in range(count))
    (root / "expected.yaml").write_text(text, encoding="utf-8")
    manifest = {**classifier_manifest(), "validation": {"expected": "expected.yaml"}}
    write_image_bundle(root, model, manifest, colour_images(3, seed=1), colour_images(count, seed=2))
    return load_bundle_dir(root)


def infer(bundle: BundleDir):
    return InferenceEngine.from_bundle(bundle, warmup_runs=0).infer


def test_both_models_are_scored_on_the_labelled_set(tmp_path: Path) -> None:
    right = labelled_bundle(tmp_path / "right", colour_classifier())
    # Answers green for blue images: right on red and green, wrong on blue.
    confused = labelled_bundle(tmp_path / "confused", colour_classifier(confuse=("blue", "green")))
    assert has_labelled_set(right)
    comparison = compare_on_labelled(LabelledSource.CANDIDATE, right, infer(right), infer(confused))
    assert (comparison.images, comparison.error) == (9, "")
    assert (comparison.candidate_score, comparison.live_score) == pytest.approx((1.0, 2 / 3))


def test_a_candidate_that_outputs_nan_or_raises_on_labelled_images_is_an_error_not_a_score(tmp_path: Path) -> None:
    bundle = labelled_bundle(tmp_path / "b", colour_classifier())
    broken = compare_on_labelled(LabelledSource.LIVE, bundle, infer(labelled_bundle(
        tmp_path / "nan", colour_classifier(nan_unless="green"))), infer(bundle))
    assert broken.error == "the candidate output NaN or Inf on 6 of them (first: validation/000.png)"
    assert broken.candidate_score == 0.0 and broken.live_score == 1.0

    def raises(image: np.ndarray) -> Prediction:
        raise RuntimeError("onnxruntime gave up")

    failed = compare_on_labelled(LabelledSource.CANDIDATE, bundle, raises, infer(bundle))
    assert failed.error == "RuntimeError: onnxruntime gave up" and np.isnan(failed.candidate_score)
    alone = compare_on_labelled(LabelledSource.CANDIDATE, bundle, infer(bundle), None)
    assert "no live model is loaded beside the candidate" in alone.error


def test_a_labels_file_that_does_not_match_its_images_is_an_error(tmp_path: Path) -> None:
    bundle = labelled_bundle(tmp_path / "b", colour_classifier(), expected="validation/000.png: {class_id: 0}\n")
    comparison = compare_on_labelled(LabelledSource.CANDIDATE, bundle, infer(bundle), infer(bundle))
    assert comparison.error == "ExpectedOutputsError: expected.yaml has no entry for validation image validation/001.png"


def prediction(class_id: int) -> Prediction:
    return Prediction(np.array([class_id], np.int32), np.array([0.9], np.float32), (COLOUR_LABELS[class_id],))


def test_samples_are_written_whole_and_listed_in_order(tmp_path: Path) -> None:
    directory = samples_dir(tmp_path / "derived")
    directory.mkdir(parents=True)
    image = np.zeros((4, 6, 3), np.uint8)
    image[:, :, 2] = 255
    for index in range(2):
        write_sample(directory, index, image, Disagreement(10 + index, "top-1 blue (2) vs green (1)",
                                                           prediction(2), prediction(1)),
                     {"candidate": "m@2.0.0", "live": "m@1.0.0"})
    (directory / ".002.json.partial").write_text("{", encoding="utf-8")  # a write cut short is never listed
    samples = list_samples(directory)
    assert [(s.index, s.stamp_ns, s.image.name) for s in samples] == [(0, 10, "000.png"), (1, 11, "001.png")]
    assert samples[0].candidate["labels"] == ["blue"] and samples[0].live["class_ids"] == [1]
    assert np.array_equal(np.asarray(Image.open(samples[1].image)), image)
    assert json.loads((directory / "000.json").read_text())["versions"] == {"candidate": "m@2.0.0", "live": "m@1.0.0"}
    assert list_samples(tmp_path / "nowhere") == []
    (directory / "003.json").write_text("[]", encoding="utf-8")
    with pytest.raises(ValueError, match="003.json is not a disagreement sample"):
        list_samples(directory)


def test_rmd_store_samples_lists_a_versions_samples(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = tmp_path / "store"
    directory = samples_dir(store / "versions" / "m" / "2.0.0" / "derived")
    assert main(["store", "samples", str(store), "m@2.0.0"]) == 1
    assert "m@2.0.0 is not installed in" in capsys.readouterr().err
    directory.mkdir(parents=True)
    assert main(["store", "samples", str(store), "m@2.0.0"]) == 0
    assert "no disagreement samples of m@2.0.0" in capsys.readouterr().out
    write_sample(directory, 0, np.zeros((2, 2, 3), np.uint8),
                 Disagreement(1_500_000_000, "top-1 \x1b[2Jred (0) vs green (1)", prediction(0), prediction(1)),
                 {"candidate": "m@2.0.0", "live": "m@1.0.0"})
    assert main(["store", "samples", str(store), "m@2.0.0"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == f"1 disagreement sample(s) of m@2.0.0 in {directory}"
    assert "000  stamp 1.500 s  top-1 \\x1b[2Jred (0) vs green (1)  000.png" in out
    assert main(["store", "samples", str(store), "m@2.0.0", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["image"] == str(directory / "000.png") and record["live"]["labels"] == ["green"]
    assert main(["store", "samples", str(store), "not-a-ref"]) == 1
