"""The mouth refiner: window geometry, an untrained refiner changes nothing, `facevid train-mouth`."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from test_cli_track import assert_one_line_error, run_cli

from facevid.config import PRESETS
from facevid.model.facevid import FaceVid
from facevid.model.mouth import cut, fade, mouth_boxes, polygon_mask, uncut
from facevid.train.prepare import write_synthetic_cache
from facevid.weights import load_weights, weights_metadata


def ellipse_mouth(centre=(0.0, 0.3), outer=(0.2, 0.1), inner=(0.1, 0.05)) -> torch.Tensor:
    """(1, 68, 2) landmarks with elliptic lips (the other points at the origin)."""
    points = torch.zeros(1, 68, 2)
    for part, count, (rx, ry) in ((slice(48, 60), 12, outer), (slice(60, 68), 8, inner)):
        angles = torch.arange(count) * 2 * math.pi / count
        points[0, part] = torch.stack([centre[0] + rx * angles.cos(), centre[1] + ry * angles.sin()], 1)
    return points


def test_window_cut_and_put_back_are_inverse_and_lip_masks_have_the_polygon_area():
    points = ellipse_mouth()
    boxes = mouth_boxes(points)
    assert torch.allclose(boxes, torch.tensor([[0.0, 0.3, 0.36]]))   # half side = 1.8 x width / 2
    image = torch.linspace(-1, 1, 64)[None, None, None].expand(1, 3, 64, 64).contiguous()
    back = uncut(cut(image, boxes, 32), boxes, 64)
    middle = uncut(fade(32)[None, None], boxes, 64)[0, 0] > 0.99   # where the correction is applied in full
    assert middle.sum() > 100
    assert (back - image)[0][:, middle].abs().max() < 1e-5
    area = polygon_mask(points[:, 48:60], boxes, 32).mean().item() * (2 * 0.36) ** 2
    assert area == pytest.approx(6 * math.sin(math.pi / 6) * 0.2 * 0.1, rel=0.03)   # the 12-gon's area
    assert polygon_mask(points[:, 60:68], boxes, 32).sum() < polygon_mask(points[:, 48:60], boxes, 32).sum()


def test_refiner_starts_as_identity_and_changes_only_the_mouth_window():
    torch.manual_seed(0)
    model = FaceVid(replace(PRESETS["tiny"], mouth_size=16, mouth_channels=(8, 16))).eval()
    reference = torch.rand(1, 3, 32, 32) * 2 - 1
    points = ellipse_mouth()
    frames = torch.rand(2, 3, 32, 32) * 2 - 1
    assert torch.equal(model.mouth(frames, reference.expand(2, -1, -1, -1), points.expand(2, -1, -1),
                                   points.expand(2, -1, -1)), frames)
    torch.nn.init.normal_(model.mouth.head.weight, std=0.1)
    out = model.mouth(frames, reference.expand(2, -1, -1, -1), points.expand(2, -1, -1), points.expand(2, -1, -1))
    changed = (out - frames).abs().amax((0, 1)) > 0
    rows, cols = changed.nonzero().T
    # the window is x in [-0.36, 0.36], y in [-0.06, 0.66] of the crop: pixels 10..21, 15..26
    assert changed.any() and cols.min() >= 9 and cols.max() <= 22 and rows.min() >= 14 and rows.max() <= 27


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    path = tmp_path_factory.mktemp("mouth_cache")
    write_synthetic_cache(path, clips=3, frames=10, size=32, seed=3)
    return path


def test_train_mouth_end_to_end_and_resume(capsys, tmp_path, cache, tiny_weights):
    holdout = tmp_path / "holdout.txt"
    holdout.write_text("synthetic_3_0002\n")
    run, out = tmp_path / "run", tmp_path / "mouth.safetensors"
    args = ["train-mouth", cache, "--weights", tiny_weights, "-o", out, "--run-dir", run, "--batch", 2,
            "--holdout", holdout, "-q"]
    code, _, err = run_cli(capsys, *args, "--steps", 3)
    assert code == 0, err
    assert "3 steps" in err and (run / "data" / "info.json").is_file() and (run / "val" / "info.json").is_file()
    model = load_weights(out)
    assert model.cfg.mouth_size == 16 and model.mouth is not None   # half the tiny model's 32-px crops
    base = load_weights(tiny_weights)
    kept = model.state_dict()   # the rest of the model, as stored (float16)
    assert all(torch.equal(v.half().float(), kept[k]) for k, v in base.state_dict().items() if v.is_floating_point())
    code, _, err = run_cli(capsys, *args, "--steps", 5)
    assert_one_line_error(code, err)
    assert "exists" in err
    code, _, err = run_cli(capsys, *args, "--steps", 5, "--force")   # resumes at step 3
    assert code == 0 and "5 steps" in err, err
    state = torch.load(run / "mouth_checkpoint.pt", weights_only=True)
    assert [record["step"] for record in state["history"]] == [3, 5]
    assert all("val_psnr" in record for record in state["history"])   # scored on the held-out clip
    best = state["best"]   # the exported refiner is the best-scoring one
    assert best["psnr"] == max(record["val_psnr"] for record in state["history"])
    assert weights_metadata(out)["mouth_steps"] == best["step"]
    exported = load_weights(out).mouth.state_dict()
    assert all(torch.equal(v.half().float(), exported[k]) for k, v in best["refiner"].items())


@pytest.mark.parametrize("case", ["suffix", "no_data", "steps", "no_folder"])
def test_train_mouth_errors(capsys, tmp_path, cache, tiny_weights, case):
    out = tmp_path / "mouth.safetensors"
    data = tmp_path / "missing" if case == "no_data" else cache
    args = {"suffix": ["-o", tmp_path / "mouth.pt"], "no_folder": ["-o", tmp_path / "nowhere" / "m.safetensors"],
            "steps": ["-o", out, "--steps", 0], "no_data": ["-o", out]}[case]
    code, _, err = run_cli(capsys, "train-mouth", data, "--weights", tiny_weights, "--run-dir", tmp_path / "run",
                           "-q", *args)
    assert_one_line_error(code, err)
    assert code == (2 if case == "steps" else 1)
    assert not out.exists() and not (tmp_path / "mouth.pt").exists()


def test_eval_scores_the_model_without_its_refiner_beside_it(one_thread, cache):
    from facevid.eval.reenactment import NO_REFINER, self_reenactment
    from facevid.io.cache import load_cache

    torch.manual_seed(0)
    model = FaceVid(replace(PRESETS["tiny"], mouth_size=16, sample_steps=1)).eval()
    torch.nn.init.normal_(model.mouth.head.weight, std=0.1)
    rows = []
    table = self_reenactment(model, load_cache(cache)[:1], max_frames=6, sheet_rows=rows)
    assert NO_REFINER in table and table[NO_REFINER]["psnr"] != table["model"]["psnr"]
    assert model.mouth is not None and len(rows[0]) == 8   # switched back on; a sheet column for it
    # columns: source, real, model, reconstruction, 1 step, without the refiner, warp only, landmark warp
    assert np.abs(rows[0][5].astype(int) - rows[0][2]).max() > 0
