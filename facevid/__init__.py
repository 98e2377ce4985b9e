"""facevid: edit and generate talking-face video with a disentangled diffusion video model.

    import facevid

    model = facevid.load_model("small")            # once; "small" is the bundled model
    facevid.transfer("face.png", "drive.mp4", "out.mp4", model=model)
    facevid.edit("talk.mp4", "smiling.mp4", shift={"smile": 0.2}, span=facevid.Span(2.0, 4.5, 0.3), model=model)
    facevid.learn_attribute("frown", "frowning/", "neutral/", "frown.safetensors", model=model)
    facevid.edit("talk.mp4", "frowning.mp4", shift={"frown": 0.8}, attributes=["frown.safetensors"], model=model)
    facevid.encode("talk.mp4", "talk.fvl", model=model)
    facevid.decode("talk.fvl", "recon.mp4", model=model, background="talk.mp4")
    facevid.track("talk.mp4", "tracked.mp4", crops="crops.mp4")

Each task also has a frame-level form for programs that hold their own frames (arrays of
(H, W, 3) uint8 RGB in, arrays out, lazily):

    for frame in facevid.transfer_frames(photo, camera_frames, model=model):
        show(frame)
    edited = list(facevid.edit_frames(frames, target={"eyes": 0.0}, model=model))
    codes = facevid.encode_frames(frames, model=model)     # facevid.Codes: a few hundred bits a frame
    crops = list(facevid.decode_frames(codes, model=model))  # or facevid.read_codes("talk.fvl")

Every task takes keyword arguments with the command line's defaults, raises a FacevidError
subclass on bad input and returns a summary (`.to_json()`). Names are imported on first use,
so `import facevid` stays light.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "load_model": "facevid.weights", "transfer": "facevid.tasks.transfer", "encode": "facevid.tasks.codec",
    "decode": "facevid.tasks.codec", "transfer_frames": "facevid.tasks.transfer",
    "encode_frames": "facevid.tasks.codec", "decode_frames": "facevid.tasks.codec", "Codes": "facevid.tasks.codec",
    "read_codes": "facevid.tasks.codec", "edit": "facevid.tasks.edit", "edit_frames": "facevid.tasks.edit",
    "Span": "facevid.tasks.edit", "learn_attribute": "facevid.tasks.learn_attr",
    "load_attribute": "facevid.face.learned",
    "Transfer": "facevid.tasks.transfer", "track": "facevid.tasks.track", "FaceVid": "facevid.model.facevid",
    "FacevidError": "facevid.errors", "InputError": "facevid.errors", "NoFaceError": "facevid.errors",
    "ConfigError": "facevid.errors", "OutputExistsError": "facevid.errors", "FacevidWarning": "facevid.errors",
}
__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'facevid' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
