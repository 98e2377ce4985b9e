"""`facevid train`: the cross-driven BCD training loop (seed 001) with EMA, atomic resumable
checkpoints, time boxes, PNG grids and plots, safetensors export, and PyTorch DDP
(`torchrun --nproc_per_node N -m facevid train ...`: gloo on CPU, NCCL on GPU)."""

from __future__ import annotations

import atexit
import copy
import json
import os
import shutil
import signal
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from facevid.config import ModelConfig, TrainConfig
from facevid.errors import ConfigError, InputError
from facevid.io.atomic import make_folder, write_json
from facevid.model.facevid import FaceVid
from facevid.train.losses import training_losses
from facevid.weights import export_weights, read_weights

CHECKPOINT = "checkpoint.pt"      # full resume state (model, EMA, optimizer, RNG, step)
WEIGHTS = "model.safetensors"     # EMA inference weights with the config in the metadata


@dataclass
class TrainSummary:
    run_dir: str
    steps: int
    minutes: float
    frames_per_second: float
    last: dict
    weights: str
    stopped: str          # "max_steps", "max_minutes" or "interrupted"


# ---------------------------------------------------------------------------- distributed

def dist_info() -> tuple[int, int]:
    """(rank, world size) from torchrun's environment; (0, 1) otherwise."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def init_distributed(device: str) -> None:
    rank, world = dist_info()
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if device.startswith("cuda") else "gloo")
        # Left to interpreter teardown, Gloo's worker threads can free tensors after Python is gone and
        # abort the process (SIGABRT, seen once in CI; pytorch/pytorch#179291): tear down while alive.
        atexit.register(_destroy_process_group)


def _destroy_process_group() -> None:
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def all_reduce_gradients(model: torch.nn.Module, world: int) -> None:
    """Average gradients over ranks (explicit so the loss code stays that of one process)."""
    if world == 1:
        return
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    flat = torch.cat([g.reshape(-1) for g in grads])
    torch.distributed.all_reduce(flat)
    flat /= world
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()


def check_ranks_agree(model: torch.nn.Module, run_dir: Path) -> None:
    """Every rank must hold the same weights after training; rank 0 writes ddp_ranks.json."""
    with torch.no_grad():
        total = torch.stack([p.double().abs().sum() for p in model.parameters()]).sum().reshape(1)
    rank, world = dist_info()
    gathered = [torch.zeros_like(total) for _ in range(world)]
    torch.distributed.all_gather(gathered, total)
    sums = [g.item() for g in gathered]
    if rank == 0:
        write_json(run_dir / "ddp_ranks.json", {"world_size": world, "weight_sums": sums})
    if max(sums) - min(sums) > 1e-9 * max(abs(x) for x in sums):
        raise RuntimeError(f"DDP ranks disagree after training: {sums}")


STOPS = (None, "max_minutes", "interrupted", "terminated")   # a later one wins when ranks differ


def agreed_stop(local: str | None, world: int, device: str) -> str | None:
    """The stop every rank takes this step: the strongest of the ranks' own reasons (their clocks
    and signal flags differ), agreed by one all_reduce, so no rank waits in a collective alone."""
    if world == 1:
        return local
    flag = torch.tensor([STOPS.index(local)], dtype=torch.int64, device=device)
    torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
    return STOPS[int(flag.item())]


# ---------------------------------------------------------------------------- pieces

def make_optimizer(model: FaceVid, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW with per-module learning rates (encoder side, quantizer, decoder side)."""
    groups = {"encoder": [], "quantizer": [], "decoder": []}
    for name, param in model.named_parameters():
        if name.startswith(("encoder.", "keypoint_net.")):
            groups["encoder"].append(param)
        elif name.startswith("quantizer."):
            groups["quantizer"].append(param)
        else:
            groups["decoder"].append(param)
    rates = learning_rates(cfg)
    return torch.optim.AdamW([{"params": p, "lr": rates[k], "base_lr": rates[k], "name": k}
                              for k, p in groups.items() if p], weight_decay=cfg.weight_decay, betas=(0.9, 0.99))


def learning_rates(cfg: TrainConfig) -> dict[str, float]:
    """The base learning rate of each of make_optimizer's parameter groups."""
    return {"encoder": cfg.lr_encoder, "quantizer": cfg.lr_quantizer, "decoder": cfg.lr_decoder}


def set_learning_rate(optimizer: torch.optim.Optimizer, step: int, warmup: int) -> None:
    scale = min(1.0, (step + 1) / max(1, warmup))
    for group in optimizer.param_groups:
        group["lr"] = group["base_lr"] * scale


@torch.no_grad()
def update_ema(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    for e, p in zip(ema.parameters(), model.parameters()):
        e.lerp_(p, 1 - decay)
    for e, b in zip(ema.buffers(), model.buffers()):
        e.copy_(b)


def plain(obj):
    """`obj` with numpy scalars as Python numbers and arrays as tensors: what `weights_only` loads."""
    import numpy as np

    if isinstance(obj, dict):
        return {k: plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(plain(v) for v in obj)
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(obj)
    return obj


def atomic_torch_save(obj, path: Path) -> None:
    """torch.save (of plain data, see `plain`) to a temp file created exclusively, then moved onto `path`."""
    from facevid.io.atomic import atomic_path

    with atomic_path(path) as tmp:
        torch.save(plain(obj), tmp)


def load_checkpoint(path: Path) -> dict:
    """A resume checkpoint, read with `weights_only=True`: tensors, numbers, strings and
    containers only, so a crafted file cannot run code (it is refused with an InputError)."""
    import pickle

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise InputError(f"{path} is not a facevid checkpoint: it holds pickled objects other than tensors "
                         "and plain data (refused: loading them could run code)") from error
    except (RuntimeError, EOFError, OSError, ValueError, AttributeError, TypeError, KeyError) as error:
        raise InputError(f"{path} is not a facevid checkpoint (unreadable: {type(error).__name__})") from error
    if not isinstance(state, dict):
        raise InputError(f"{path} is not a facevid checkpoint")
    return state


def init_from(model: FaceVid, path: str | Path) -> list[str]:
    """Start `model` from the weights in `path` (e.g. an earlier run's export). Parameters the
    file lacks (a module added since) keep their initialisation; a layer that gained input
    channels (dim 1) gets the file's weights on the old channels and zeros on the new ones,
    so it computes what it did. A model that gains a flow code starts its coarse flow head and
    the flow U-Net's output layer afresh: they learned corrections to the TPS, not to the flow
    code's flow (measured: kept, the U-Net's correction cost 2 dB of held-out PSNR 300 steps
    later). Returns the names of the new, widened or restarted parameters."""
    old_cfg, state = read_weights(path)
    restarted = []
    if model.cfg.flow_code and not old_cfg.flow_code:
        restarted = [name for name in list(state) if name.startswith(("flow_head.", "flow_net.head."))]
        for name in restarted:
            del state[name]
    own = model.state_dict()
    widened = []
    for name, tensor in list(state.items()):
        mine = own.get(name)
        if (mine is not None and mine.dim() == tensor.dim() >= 2 and mine.shape[0] == tensor.shape[0]
                and mine.shape[2:] == tensor.shape[2:] and mine.shape[1] > tensor.shape[1]):
            state[name] = torch.cat([tensor, tensor.new_zeros(mine.shape[0], mine.shape[1] - tensor.shape[1],
                                                              *tensor.shape[2:])], 1)
            widened.append(name)
    clash = [k for k, v in state.items() if k not in own or own[k].shape != v.shape]
    if clash:
        raise InputError(f"{path} does not fit the {model.cfg.__class__.__name__} of this run "
                         f"({len(clash)} tensors differ, e.g. {clash[0]})")
    missing, _ = model.load_state_dict(state, strict=False)
    return list(dict.fromkeys([*missing, *widened, *restarted]))


# ---------------------------------------------------------------------------- data

def resolve_clips(data, run_dir: Path, cfg: TrainConfig, model_cfg: ModelConfig, progress: bool):
    """Training clips from prepared caches and/or folders of videos (prepared into run_dir/cache)."""
    from facevid.io.cache import load_cache
    from facevid.train.prepare import prepare

    clips = []
    sources = [data] if isinstance(data, (str, Path)) else list(data)
    for i, source in enumerate(map(Path, sources)):
        if not source.exists():
            raise InputError(f"training data {source} does not exist")
        if not (source / "manifest.json").exists():
            cache = run_dir / f"cache{i}"
            rank, world = dist_info()
            if rank == 0:
                prepare(source, cache, size=max(256, model_cfg.out_size), margin=model_cfg.crop_margin,
                        progress=progress)
            if world > 1:
                torch.distributed.barrier()
            source = cache
        clips += load_cache(source, exclude=set(cfg.eval_identities),
                            min_frames=cfg.content_frames + cfg.target_frames)
    if not clips and cfg.synthetic_prob < 1:
        raise InputError(f"no clip of at least {cfg.content_frames + cfg.target_frames} frames with a face "
                         "in the training data (outside the held-out identities)")
    return clips


def make_sampler(clips, cfg: TrainConfig, model_cfg: ModelConfig, seed: int):
    from facevid.train.batches import BatchSampler

    return BatchSampler(clips, out_size=model_cfg.out_size, net_size=model_cfg.net_size,
                        clips_per_batch=cfg.clips_per_batch, content_frames=cfg.content_frames,
                        target_frames=cfg.target_frames, strides=cfg.strides, flip_prob=cfg.flip_prob,
                        synthetic_prob=cfg.synthetic_prob, flow_size=model_cfg.flow_size // 2 if cfg.loss_flow else 0,
                        seed=seed)


def fit_flow_code(model: FaceVid, clips, cfg: TrainConfig, model_cfg: ModelConfig, flows: int = 1024) -> float:
    """Fit the flow code's components to the measured flow of training windows, drawn as training
    draws them (with flips and synthetic heads) by a sampler of its own seed: every DDP rank
    fits the same components."""
    from facevid.model.flow_code import measured_flow

    sampler = make_sampler(clips, cfg, model_cfg, seed=cfg.seed * 1000 + 999)
    measured, count = [], 0
    while count < max(flows, model_cfg.flow_code):
        batch = sampler.sample()
        measured.append(measured_flow(batch["target"], batch["reference"], model_cfg.flow_input).flatten(0, 1))
        count += len(measured[-1])
    return model.flow_code.fit(torch.cat(measured))


# ---------------------------------------------------------------------------- loop

class _StopFlag:
    """First Ctrl-C/SIGTERM asks the loop to save and stop after this step; a second one aborts."""

    REASONS = {signal.SIGINT: "interrupted", signal.SIGTERM: "terminated"}

    def __init__(self):
        self.reason = None
        self._old = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                pass
        return self

    def _handle(self, signum, frame):
        if self.reason is not None:
            raise KeyboardInterrupt
        self.reason = self.REASONS.get(signum, "interrupted")

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


def train_step(model, optimizer, batch, generator, cfg: TrainConfig, world: int) -> dict:
    weights = {"warp": cfg.loss_warp, "flow": cfg.loss_flow, "correspondence": cfg.loss_correspondence,
               "diffusion": cfg.loss_diffusion, "landmarks": cfg.loss_landmarks, "keypoints": cfg.loss_keypoints,
               "rate": 1.0}
    losses, metrics = training_losses(model, batch, generator, teacher_forcing=cfg.teacher_forcing,
                                            sigma_max_share=cfg.sigma_max_share, mouth_weight=cfg.mouth_weight,
                                            pin_share=cfg.pin_share)
    total = sum(weights[k] * v for k, v in losses.items())
    if not torch.isfinite(total):
        raise FloatingPointError(f"training loss is not finite ({ {k: v.item() for k, v in losses.items()} })")
    optimizer.zero_grad(set_to_none=True)
    total.backward()
    all_reduce_gradients(model, world)
    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    optimizer.step()
    model.quantizer.step_temperature()
    return {**{k: v.item() for k, v in losses.items()}, "total": total.item(), **metrics}


def _state(model, ema, optimizer, generator, sampler, step, elapsed, history, cfg) -> dict:
    return {"model": model.state_dict(), "ema": ema.state_dict(), "optimizer": optimizer.state_dict(),
            "generator": generator.get_state(), "sampler": sampler.state(), "step": step, "elapsed": elapsed,
            "history": history, "train_config": asdict(cfg), "torch_rng": torch.get_rng_state()}


def _restore(path: Path, state: dict, model, ema, optimizer, generator, sampler):
    try:
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["generator"])
        sampler.set_state(state["sampler"])
        torch.set_rng_state(state["torch_rng"])
        return int(state["step"]), float(state["elapsed"]), list(state["history"])
    except (KeyError, RuntimeError, ValueError, TypeError) as error:
        raise InputError(f"{path} does not fit this run's model ({str(error).splitlines()[0][:200]})") from error


def train(data: str | Path, run_dir: str | Path, cfg: TrainConfig, *, resume: bool = False,
          init_weights: str | Path | None = None, progress: bool = True, log=print) -> TrainSummary:
    """Train (or resume) a FaceVid model on `data`; everything is written under `run_dir`."""
    from facevid.weights import check_device

    check_device(cfg.device)
    rank, world = dist_info()
    init_distributed(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    run_dir = Path(run_dir)
    checkpoint = run_dir / CHECKPOINT
    if checkpoint.exists() and not resume:
        raise ConfigError(f"{run_dir} already holds a training run (use --resume to continue it)")
    if resume and not checkpoint.exists():
        raise InputError(f"nothing to resume: {checkpoint} does not exist")
    resumed = load_checkpoint(checkpoint) if resume else None   # checked before any work
    model_cfg = cfg.model_config()
    created = not run_dir.exists()
    make_folder(run_dir, "run folder")
    try:
        clips = resolve_clips(data, run_dir, cfg, model_cfg, progress and rank == 0)
    except BaseException:
        if created and rank == 0:   # a run that never started leaves nothing behind
            shutil.rmtree(run_dir, ignore_errors=True)
        raise
    sampler = make_sampler(clips, cfg, model_cfg, seed=cfg.seed * 1000 + rank)
    torch.manual_seed(cfg.seed)
    model = FaceVid(model_cfg)
    if init_weights is not None:
        new = init_from(model, init_weights)
        if new and rank == 0:
            log(f"initialised from {init_weights}; new parameters: {', '.join(new)}")
    if model_cfg.flow_code and not resume and not model.flow_code_fitted:
        explained = fit_flow_code(model, clips, cfg, model_cfg)
        if rank == 0:
            log(f"flow code: {model_cfg.flow_code} components of the measured flow explain {explained:.0%} of it")
    model = model.to(cfg.device).train()
    ema = copy.deepcopy(model).eval()
    optimizer = make_optimizer(model, cfg)
    generator = torch.Generator(cfg.device).manual_seed(cfg.seed * 1000 + rank)
    step, elapsed, history = 0, 0.0, []
    if resume:
        step, elapsed, history = _restore(checkpoint, resumed, model, ema, optimizer, generator, sampler)
        rates = learning_rates(cfg)   # the optimizer's state is resumed, its rates are this config's
        for group in optimizer.param_groups:
            group["base_lr"] = rates[group["name"]]
    if rank == 0:
        write_json(run_dir / "train_config.json", asdict(cfg))
    from facevid.train.viz import GridMaker

    grids = GridMaker(clips, cfg, model_cfg) if rank == 0 else None
    return _loop(model, ema, optimizer, generator, sampler, cfg, run_dir, step, elapsed, history, grids,
                 progress and rank == 0, log)


def _loop(model, ema, optimizer, generator, sampler, cfg, run_dir, step, elapsed, history, grids, progress, log):
    from facevid.eval.report import save_training_plot
    from facevid.progress import progress_bar

    rank, world = dist_info()
    start, last_save, frames_seen = time.monotonic() - elapsed, time.monotonic(), 0
    per_step = cfg.clips_per_batch * cfg.target_frames * world
    reason = "max_steps"
    record = {}
    with _StopFlag() as stop, progress_bar("train", cfg.max_steps, enabled=progress, unit="steps/s") as advance:
        advance(step)
        tick = time.monotonic()
        while step < cfg.max_steps:
            late = cfg.max_minutes and time.monotonic() - start >= cfg.max_minutes * 60
            agreed = agreed_stop(stop.reason or ("max_minutes" if late else None), world, cfg.device)
            if agreed:
                reason = agreed
                break
            set_learning_rate(optimizer, step, cfg.warmup_steps)
            batch = {k: v.to(cfg.device, non_blocking=True) for k, v in sampler.sample().items()}
            record = train_step(model, optimizer, batch, generator, cfg, world)
            update_ema(ema, model, cfg.ema_decay if step >= cfg.warmup_steps else 0.0)
            step += 1
            frames_seen += per_step
            advance(1)
            if step % cfg.log_every == 0 and rank == 0:
                now = time.monotonic()
                record.update(step=step, minutes=(now - start) / 60,
                              frames_per_second=cfg.log_every * per_step / max(now - tick, 1e-9))
                tick = now
                history.append(record)
                with open(run_dir / "log.jsonl", "a") as f:
                    f.write(json.dumps(record) + "\n")
                if not progress:
                    log(_log_line(record))
            if grids is not None and cfg.sample_every and step % cfg.sample_every == 0:
                grids.save(ema, run_dir / f"grid_{step:07d}.png")
            if rank == 0 and time.monotonic() - last_save >= cfg.checkpoint_minutes * 60:
                _save(model, ema, optimizer, generator, sampler, step, start, history, cfg, run_dir)
                last_save = time.monotonic()
    minutes = (time.monotonic() - start) / 60
    weights = run_dir / WEIGHTS
    if rank == 0:
        _save(model, ema, optimizer, generator, sampler, step, start, history, cfg, run_dir)
        if history:
            save_training_plot(history, run_dir / "training.png", model.cfg.rate_target)
        if grids is not None:
            grids.save(ema, run_dir / "grid_last.png")
    if world > 1:
        check_ranks_agree(model, run_dir)
        _destroy_process_group()
    fps = history[-1]["frames_per_second"] if history else 0.0
    return TrainSummary(str(run_dir), step, minutes, fps, record, str(weights), reason)


def _save(model, ema, optimizer, generator, sampler, step, start, history, cfg, run_dir):
    elapsed = time.monotonic() - start
    atomic_torch_save(_state(model, ema, optimizer, generator, sampler, step, elapsed, history, cfg),
                      run_dir / CHECKPOINT)
    export_weights(ema, run_dir / WEIGHTS, {"steps": step, "minutes": round(elapsed / 60, 2)})


def _log_line(record: dict) -> str:
    return (f"step {record['step']:>7} | loss {record['total']:.4f} (warp {record['warp']:.4f}, "
            f"flow {record.get('flow', 0.0):.3f}, corr {record.get('correspondence', 0.0):.3f}, "
            f"diff {record['diffusion']:.4f}, lmk {record['landmarks']:.4f}) | "
            f"bits {record['bits_hard']:.1f} hard / {record['bits_soft']:.1f} soft | "
            f"codes {record['codes_mean']:.1f} | warp {record['warp_psnr']:.2f} dB | "
            f"{record['frames_per_second']:.1f} frames/s")

