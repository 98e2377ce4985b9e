"""`facevid train` end to end on the tiny preset: outputs, exact resume, DDP, Ctrl-C, errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace

import pytest
import torch
from safetensors import safe_open
from test_cli_track import assert_one_line_error, run_cli

from facevid.train.prepare import write_synthetic_cache
from facevid.weights import load_weights

FAST = ["--preset", "tiny", "--threads", "1", "-q"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    path = tmp_path_factory.mktemp("cache")
    write_synthetic_cache(path, clips=6, frames=20, size=32, seed=3)
    return path


def test_train_writes_weights_grid_plot_and_log(capsys, tmp_path, cache):
    run = tmp_path / "run"
    code, out, err = run_cli(capsys, "train", cache, "-o", run, "--max-steps", 12, "--json", *FAST)
    assert code == 0, err
    summary = json.loads(out)
    assert summary["steps"] == 12 and summary["stopped"] == "max_steps"
    for name in ("checkpoint.pt", "model.safetensors", "training.png", "grid_last.png", "log.jsonl"):
        assert (run / name).is_file(), name
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [10]
    assert {"bits_hard", "bits_soft", "codes_mean", "warp_psnr", "frames_per_second"} <= set(records[0])
    with safe_open(str(run / "model.safetensors"), framework="pt") as f:
        config = json.loads(f.metadata()["config"])
    assert config["dit_dim"] == 32
    model = load_weights(run / "model.safetensors")
    assert model.cfg.vq_groups == 4
    assert model.flow_code_fitted and "flow code: 16 components" in err   # fitted on the data as training began


def test_init_from_earlier_weights_keeps_new_modules_fresh(tmp_path):
    """`--init` starts from an earlier export; a module the file lacks keeps its initialisation,
    and a file of another architecture is refused."""
    from facevid.config import PRESETS
    from facevid.errors import InputError
    from facevid.model.facevid import FaceVid
    from facevid.train.loop import init_from
    from facevid.weights import export_weights

    torch.manual_seed(0)
    old = FaceVid(PRESETS["tiny"])
    with torch.no_grad():
        old.flow_head.weight.normal_()
    path = export_weights(old, tmp_path / "old.safetensors")
    from safetensors.torch import load_file, save_file

    tensors = {k: v for k, v in load_file(str(path)).items() if not k.startswith("flow_head.")}
    with safe_open(str(path), framework="pt") as f:
        save_file(tensors, str(path), metadata=f.metadata())
    new = FaceVid(PRESETS["tiny"])
    assert init_from(new, path) == ["flow_head.weight"]
    for name, tensor in new.state_dict().items():
        if name != "flow_head.weight":
            assert torch.equal(tensor, old.state_dict()[name]), name
    assert not new.flow_head.weight.any()
    with pytest.raises(InputError, match="does not fit"):
        init_from(FaceVid(replace(PRESETS["tiny"], enc_dim=48)), path)
    # a model that gains a flow code fits it and restarts the heads that corrected the TPS
    before = FaceVid(replace(PRESETS["tiny"], flow_code=0))
    with torch.no_grad():
        before.flow_head.weight.normal_()
        before.flow_net.head.weight.normal_()
    path = export_weights(before, tmp_path / "before.safetensors")
    after = FaceVid(PRESETS["tiny"])
    assert set(init_from(after, path)) == {"flow_code.mean", "flow_code.basis", "flow_code.scale", "flow_code.fitted",
                                           "flow_head.weight", "flow_net.head.weight", "flow_net.head.bias"}
    assert not after.flow_head.weight.any() and not after.flow_net.head.weight.any()
    assert torch.equal(after.dit.null_motion, before.dit.null_motion) and not after.flow_code_fitted
    # a layer that gained input channels keeps its old weights and starts at zero on the new ones
    narrow = FaceVid(PRESETS["tiny"])
    stem = narrow.encoder.stem.stages[0]
    narrow.encoder.stem.stages[0] = torch.nn.Conv2d(3, stem.out_channels, 4, stride=4)
    path = export_weights(narrow, tmp_path / "narrow.safetensors")
    wide = FaceVid(PRESETS["tiny"])
    assert "encoder.stem.stages.0.weight" in init_from(wide, path)
    weight = wide.encoder.stem.stages[0].weight
    assert torch.equal(weight[:, :3], narrow.encoder.stem.stages[0].weight) and not weight[:, 3:].any()


def _weights(run):
    return torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=True)


def test_resume_continues_exactly(capsys, tmp_path, cache):
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert run_cli(capsys, "train", cache, "-o", straight, "--max-steps", 8, *FAST)[0] == 0
    assert run_cli(capsys, "train", cache, "-o", split, "--max-steps", 5, *FAST)[0] == 0
    assert run_cli(capsys, "train", cache, "-o", split, "--max-steps", 8, "--resume", *FAST)[0] == 0
    a, b = _weights(straight), _weights(split)
    assert a["step"] == b["step"] == 8
    for key in ("model", "ema"):
        for name, tensor in a[key].items():
            assert torch.equal(tensor, b[key][name]), f"{key}.{name} differs after resume"


def test_resume_takes_the_learning_rates_of_its_config(capsys, tmp_path, cache):
    run, slower = tmp_path / "run", tmp_path / "slower.toml"
    assert run_cli(capsys, "train", cache, "-o", run, "--max-steps", 3, *FAST)[0] == 0
    slower.write_text("lr_quantizer = 1e-5\n")
    assert run_cli(capsys, "train", cache, "-o", run, "--max-steps", 4, "--resume", "--config", slower, *FAST)[0] == 0
    groups = {g["name"]: g for g in _weights(run)["optimizer"]["param_groups"]}
    assert groups["quantizer"]["base_lr"] == 1e-5 and groups["encoder"]["base_lr"] == 2e-4
    assert groups["quantizer"]["lr"] == pytest.approx(1e-5 * 4 / 200)   # step 4 of the warmup


@pytest.mark.parametrize("case", ["missing", "preset", "exists", "nothing_to_resume", "config_key", "holdout",
                                  "device"])
def test_train_errors(capsys, tmp_path, cache, case):
    run, extra, data = tmp_path / "run", [], cache
    if case == "missing":
        data = tmp_path / "no_such_folder"
    elif case == "preset":
        extra = ["--preset", "huge"]
    elif case == "exists":
        assert run_cli(capsys, "train", cache, "-o", run, "--max-steps", 1, *FAST)[0] == 0
    elif case == "nothing_to_resume":
        extra = ["--resume"]
    elif case == "config_key":
        bad = tmp_path / "bad.toml"
        bad.write_text("learning_rate = 0.1\n")
        extra = ["--config", bad]
    elif case == "holdout":
        extra = ["--holdout", tmp_path / "missing.txt"]
    elif case == "device":
        extra = ["--device", "tpu"]
    before = sorted(p.name for p in tmp_path.iterdir())
    code, _, err = run_cli(capsys, "train", data, "-o", run, "--max-steps", 1, *FAST, *extra)
    assert_one_line_error(code, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE")
    env.pop("RANK", None)
    return env


def test_ddp_two_cpu_processes_agree(tmp_path, cache):
    run = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "facevid",
           "train", str(cache), "-o", str(run), "--max-steps", "4", *FAST]
    result = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=300)
    assert result.returncode == 0, result.stderr[:3000]  # the ranks speak first, the launcher's traceback after
    ranks = json.loads((run / "ddp_ranks.json").read_text())
    assert ranks["world_size"] == 2
    assert ranks["weight_sums"][0] == ranks["weight_sums"][1]
    assert _weights(run)["step"] == 4


def test_ctrl_c_saves_and_exits_cleanly(tmp_path, cache):
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "facevid", "train", str(cache), "-o", str(run), "--max-steps", "100000", *FAST]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    deadline = time.time() + 120
    while not (run / "log.jsonl").exists() and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "interrupted at step" in err
    state = _weights(run)
    assert state["step"] >= 10
    assert (run / "model.safetensors").is_file()


def test_half_precision_export_loads_as_float32(tmp_path):
    from facevid.config import PRESETS
    from facevid.model.facevid import FaceVid
    from facevid.weights import export_weights

    torch.manual_seed(0)
    model = FaceVid(PRESETS["tiny"]).eval()
    full = export_weights(model, tmp_path / "full.safetensors")
    half = export_weights(model, tmp_path / "half.safetensors", half=True)
    assert half.stat().st_size < 0.6 * full.stat().st_size
    loaded = load_weights(half)
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert b.dtype == a.dtype and torch.allclose(a, b, rtol=1e-3, atol=1e-4), name


def test_holdout_keeps_its_people_out_of_training(capsys, tmp_path, cache, monkeypatch):
    """`train --holdout FILE`: the batches are drawn from every clip except the listed people's."""
    import facevid.train.loop as loop
    from facevid.io.cache import load_cache

    seen: list[str] = []
    make_sampler = loop.make_sampler

    def recording(clips, *args, **kwargs):
        seen.extend(clip.identity for clip in clips)
        return make_sampler(clips, *args, **kwargs)

    monkeypatch.setattr(loop, "make_sampler", recording)
    people = sorted({clip.identity for clip in load_cache(cache)})
    held = tmp_path / "held.txt"
    held.write_text(f"{people[0]}\n{people[-1]}  # two people kept out\n")
    code, _, err = run_cli(capsys, "train", cache, "-o", tmp_path / "run", "--max-steps", 1, "--holdout", held, *FAST)
    assert code == 0, err
    assert len(people) >= 3 and set(seen) == set(people[1:-1])


def test_train_straight_from_a_folder_of_videos(capsys, tmp_path, moving_clip):
    """`facevid train VIDEOS_DIR`: the videos are tracked into a cache inside the run, then trained on."""
    import shutil

    from facevid.io.cache import load_cache

    videos = tmp_path / "videos"
    videos.mkdir()
    shutil.copy(moving_clip[0], videos / "talk.mp4")
    run = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", videos, "-o", run, "--max-steps", 2, *FAST)
    assert code == 0, err
    clips = load_cache(run / "cache0")
    assert len(clips) == 1 and len(clips[0].frames) == 40 and (run / "model.safetensors").is_file()
