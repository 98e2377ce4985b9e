"""Aligned square face crops and paste-back (the crop geometry of dlib's 5-point face chip).

Frame→crop transforms are (2, 3) similarity matrices. Crops are cut with area
pre-filtering when shrinking (no aliasing at small model resolutions), and pasted back by
the inverse warp under a feathered mask with optional colour matching (LivePortrait-style).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from facevid.errors import ConfigError

# dlib's 5-point mean face in a unit chip (padding 0): image-right eye outer and inner
# corner, image-left eye outer and inner corner, bottom of the nose.
TEMPLATE_5PT = np.array([
    (0.8595674595992, 0.2134981538014), (0.6460604764104, 0.2289674387677),
    (0.1205750620789, 0.2137274526848), (0.3340850613712, 0.2290642403242),
    (0.4901123135679, 0.6277975316475),
])
# Where dlib's HOG detector box sits in template units (measured on 79 real photos).
HOG_BOX_IN_TEMPLATE = np.array([-0.141, -0.136, 1.111, 1.086])

@dataclass(frozen=True)
class CropSpec:
    """How a face is cut out: square side `size` pixels, `margin` of the face size added
    on each side, crop centre `center_y` (template units, 0.5 = face box centre)."""

    size: int = 256       # crop side in pixels (the model resolution)
    margin: float = 0.5   # fraction of the face template added on each side
    center_y: float = 0.4  # vertical crop centre in template units (smaller: more hair)

    def __post_init__(self):
        if not 16 <= self.size <= 1024:
            raise ConfigError(f"crop size {self.size} is out of range (16..1024)")
        if not 0.0 <= self.margin <= 2.0:
            raise ConfigError(f"crop margin {self.margin} is out of range (0..2)")


# --------------------------------------------------------------------------- geometry

def umeyama(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (Umeyama 1991) mapping src points onto dst: a (2, 3) matrix."""
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    u, sv, vt = np.linalg.svd(d.T @ s / len(src))
    sign = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[1, 1] = -1
    rot = u @ sign @ vt
    scale = np.trace(np.diag(sv) @ sign) / ((s ** 2).sum() / len(src))
    return np.hstack([scale * rot, (mu_d - scale * rot @ mu_s)[:, None]])


def transform_points(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a (2, 3) affine matrix to (N, 2) points."""
    return points @ matrix[:, :2].T + matrix[:, 2]


def invert_affine(matrix: np.ndarray) -> np.ndarray:
    return cv2.invertAffineTransform(matrix.astype(np.float64))


def align_transform(landmarks: np.ndarray, spec: CropSpec) -> np.ndarray:
    """Frame → crop similarity (2, 3) for 5 landmarks under a crop spec."""
    to_template = umeyama(landmarks.astype(np.float64), TEMPLATE_5PT)
    side = 1.0 + 2.0 * spec.margin
    origin = np.array([0.5 - side / 2, spec.center_y - side / 2])
    template_to_crop = np.array([[spec.size / side, 0, -origin[0] * spec.size / side],
                                 [0, spec.size / side, -origin[1] * spec.size / side]])
    return compose(template_to_crop, to_template)


def compose(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """The (2, 3) affine x ↦ outer(inner(x))."""
    return np.hstack([outer[:, :2] @ inner[:, :2], (outer[:, :2] @ inner[:, 2] + outer[:, 2])[:, None]])


def transform_to_params(matrix: np.ndarray, size: int) -> np.ndarray:
    """Frame→crop similarity → (centre x, centre y, log side in frame px, angle)."""
    a, b = matrix[0, 0], matrix[1, 0]
    scale = math.hypot(a, b)
    centre = transform_points(invert_affine(matrix), np.array([[size / 2, size / 2]]))[0]
    return np.array([centre[0], centre[1], math.log(size / scale), math.atan2(b, a)])


def params_to_transform(params: np.ndarray, size: int) -> np.ndarray:
    """Inverse of transform_to_params."""
    cx, cy, log_side, angle = params
    scale = size / math.exp(log_side)
    a, b = scale * math.cos(angle), scale * math.sin(angle)
    lin = np.array([[a, -b], [b, a]])
    t = np.array([size / 2, size / 2]) - lin @ np.array([cx, cy])
    return np.hstack([lin, t[:, None]])


def box_from_landmarks(landmarks: np.ndarray) -> np.ndarray:
    """The box the HOG detector would give for these landmarks (x0, y0, x1, y1)."""
    to_frame = invert_affine(umeyama(landmarks.astype(np.float64), TEMPLATE_5PT))
    x0, y0, x1, y1 = HOG_BOX_IN_TEMPLATE
    corners = transform_points(to_frame, np.array([[x0, y0], [x1, y0], [x0, y1], [x1, y1]]))
    return np.array([*corners.min(0), *corners.max(0)])


def face_box_in_crop(spec: CropSpec, size: int) -> np.ndarray:
    """Where the HOG detector's face box lies in a crop of `size` pixels cut with `spec`
    (x0, y0, x1, y1): the box dlib's shape predictors are run on in aligned crops."""
    side = 1.0 + 2.0 * spec.margin
    origin = np.array([0.5 - side / 2, spec.center_y - side / 2] * 2)
    return (HOG_BOX_IN_TEMPLATE - origin) * size / side


def iou(a: np.ndarray, b: np.ndarray) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


# --------------------------------------------------------------------------- warping

def warp(image: np.ndarray, matrix: np.ndarray, size: tuple[int, int], *,
         border: int = cv2.BORDER_REPLICATE) -> np.ndarray:
    """Warp `image` by the affine `matrix` (source → destination pixels) into `size` (w, h).

    Where the warp shrinks by more than 2x, the source is first reduced with area
    averaging to twice the output scale, so small outputs do not alias and an
    up-then-down round trip stays sharp."""
    scale = math.sqrt(abs(np.linalg.det(matrix[:, :2])))
    if scale < 0.5:
        # cut the source region that lands in the output, reduce it, then warp the rest
        inv = invert_affine(matrix)
        w, h = size
        corners = transform_points(inv, np.array([[0, 0], [w, 0], [0, h], [w, h]], float))
        x0, y0 = np.floor(corners.min(0)).astype(int) - 2
        x1, y1 = np.ceil(corners.max(0)).astype(int) + 2
        x0, y0 = max(x0, 0), max(y0, 0)
        x1, y1 = min(x1, image.shape[1]), min(y1, image.shape[0])
        if x1 - x0 >= 2 and y1 - y0 >= 2:
            region = image[y0:y1, x0:x1]
            rw, rh = max(2, round((x1 - x0) * scale * 2)), max(2, round((y1 - y0) * scale * 2))
            small = cv2.resize(region, (rw, rh), interpolation=cv2.INTER_AREA)
            # small pixel centres ↔ region pixel centres
            to_region = np.array([[(x1 - x0) / rw, 0, (x1 - x0) / rw / 2 - 0.5 + x0],
                                  [0, (y1 - y0) / rh, (y1 - y0) / rh / 2 - 0.5 + y0]])
            return cv2.warpAffine(small, compose(matrix, to_region), size, flags=cv2.INTER_CUBIC,
                                  borderMode=border)
    return cv2.warpAffine(image, matrix, size, flags=cv2.INTER_CUBIC, borderMode=border)


def cut_crop(frame: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    """The aligned (size, size, 3) crop of `frame` under the frame→crop `matrix`."""
    return warp(frame, matrix, (size, size))


def crop_mask(size: int, shape: str = "face", feather: float = 0.08) -> np.ndarray:
    """A (size, size) float32 blend mask in crop space, 1 inside, feathered to 0.

    'square': the whole crop with soft borders, exactly 0 on its outer ring (a pasted crop
    leaves no edge in the frame) and exactly 1 from 2·pad + 1 px in; 'face': an ellipse around
    the face (forehead to chin, ear to ear) of the default crop spec; 'head': that ellipse grown
    by a quarter (the jaw, the hairline and the ears inside it), held within the crop and 0 on
    its outer ring as the square's."""
    if shape not in MASKS:
        raise ConfigError(f"unknown mask '{shape}' (choose from {', '.join(MASKS)})")
    pad = max(1, round(feather * size))
    mask = np.zeros((size, size), np.float32)
    if shape == "square":
        mask[pad + 1:size - pad - 1, pad + 1:size - pad - 1] = 1.0
    else:
        grow = 1.25 if shape == "head" else 1.0
        centre = (round(size * 0.5), round(size * 0.53))
        axes = (min(round(size * 0.36 * grow), size // 2) - pad,
                min(round(size * 0.44 * grow), round(size * 0.47)) - pad)
        cv2.ellipse(mask, centre, axes, 0, 0, 360, 1.0, -1, cv2.LINE_AA)
        if shape == "head":
            ring = np.ones_like(mask)
            ring[pad + 1:size - pad - 1, pad + 1:size - pad - 1] = 0.0
            mask[ring > 0] = 0.0
    k = 2 * pad + 1     # the blur reaches pad px: from the outer ring's zeros to the inner ones
    return cv2.GaussianBlur(mask, (k, k), pad / 2, borderType=cv2.BORDER_CONSTANT)


MASKS = ("face", "head", "square")


def match_colour(image: np.ndarray, reference: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Shift `image`'s per-channel Lab mean and std to `reference`'s, weighted by `mask`."""
    w = mask[..., None].astype(np.float32)
    total = max(float(w.sum()), 1e-6)
    src = cv2.cvtColor(image, cv2.COLOR_RGB2LAB).astype(np.float32)
    ref = cv2.cvtColor(reference, cv2.COLOR_RGB2LAB).astype(np.float32)
    stats = []
    for lab in (src, ref):
        mean = (lab * w).sum((0, 1)) / total
        std = np.sqrt(((lab - mean) ** 2 * w).sum((0, 1)) / total) + 1e-3
        stats.append((mean, std))
    (ms, ss), (mr, sr) = stats
    out = (src - ms) * (sr / ss) + mr
    return cv2.cvtColor(np.clip(out, 0, 255).astype(np.uint8), cv2.COLOR_LAB2RGB)


def crop_region(matrix: np.ndarray, size: int, shape: tuple[int, ...], margin: int = 2
                ) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1): the frame pixels a crop of side `size` cut by the frame → crop `matrix`
    covers, `margin` px more on each side, within a frame of `shape`; None when none are."""
    corners = transform_points(invert_affine(matrix), np.array([[0, 0], [size, 0], [0, size], [size, size]], float))
    x0, y0 = np.maximum(np.floor(corners.min(0)).astype(int) - margin, 0)
    x1, y1 = np.minimum(np.ceil(corners.max(0)).astype(int) + margin, [shape[1], shape[0]])
    return None if x1 <= x0 or y1 <= y0 else (int(x0), int(y0), int(x1), int(y1))


def paste_back(frame: np.ndarray, crop: np.ndarray, matrix: np.ndarray, *,
               mask: np.ndarray | None = None, colour_match: bool = False) -> np.ndarray:
    """Put a (possibly generated) crop back into `frame` under a feathered mask.

    `matrix` is the frame→crop transform the crop was cut with; `mask` (crop space,
    float in [0, 1]) defaults to the 'face' ellipse. Returns a new frame."""
    size = crop.shape[0]
    if mask is None:
        mask = crop_mask(size, "face")
    if colour_match:
        crop = match_colour(crop, cut_crop(frame, matrix, size), mask)
    inv = invert_affine(matrix)
    box = crop_region(matrix, size, frame.shape)   # only work on the frame region the crop covers
    if box is None:
        return frame.copy()
    x0, y0, x1, y1 = box
    shift = np.array([[1, 0, -x0], [0, 1, -y0]], float)
    to_region = compose(shift, inv)
    region_size = (int(x1 - x0), int(y1 - y0))
    pasted = warp(crop, to_region, region_size)
    alpha = warp(mask.astype(np.float32), to_region, region_size, border=cv2.BORDER_CONSTANT)[..., None]
    alpha = np.clip(alpha, 0.0, 1.0)
    out = frame.copy()
    region = out[y0:y1, x0:x1].astype(np.float32)
    out[y0:y1, x0:x1] = np.clip(region + alpha * (pasted.astype(np.float32) - region) + 0.5, 0, 255).astype(np.uint8)
    return out


# --------------------------------------------------------------------------- native scale and head motion

def rescale_transform(matrix: np.ndarray, factor: float) -> np.ndarray:
    """The frame→crop transform of the same crop with `factor` times the pixels a side
    (pixel centres: crop pixel i of the first is pixel factor·i + (factor − 1)/2 of the second)."""
    out = np.asarray(matrix, np.float64) * factor
    out[:, 2] += (factor - 1) / 2
    return out


def native_side(matrix: np.ndarray, size: int, cap: int, multiple: int = 8) -> int:
    """The crop side at which a crop of `size` cut by `matrix` has the frame's own pixel
    density (one crop pixel per frame pixel), rounded to `multiple`, between size and cap."""
    per_pixel = math.sqrt(abs(np.linalg.det(np.asarray(matrix)[:, :2])))   # crop px per frame px
    side = int(round(size / max(per_pixel, 1e-9) / multiple)) * multiple
    return int(min(max(side, size), max(cap, size)))


def head_change(reference: np.ndarray, current: np.ndarray) -> np.ndarray:
    """A head's change of pose from `reference` to `current` (each a frame→crop similarity of
    that frame), as the crop→crop similarity (2, 3) from the current crop to the reference's:
    it sends a facial point's crop position to where that point is now, in the reference's crop
    (a head moved d reference-crop pixels right gives a translation of +d)."""
    return compose(np.asarray(reference, np.float64), invert_affine(np.asarray(current)))


def moved_transform(transform: np.ndarray, change: np.ndarray) -> np.ndarray:
    """The frame→crop transform of the face of `transform` moved by `change` (head_change):
    a pixel of the moved face's crop lands where `change` sends it in the unmoved crop."""
    return compose(invert_affine(np.asarray(change)), np.asarray(transform, np.float64))


HEAD_LIMITS = (0.4, 30.0, 1.5)   # the carried head's largest shift (× crop side), roll (°) and zoom (or 1/zoom)


def limit_head_change(change: np.ndarray, size: int, limits: tuple[float, float, float] = HEAD_LIMITS
                      ) -> np.ndarray:
    """`change` (head_change, a crop→crop similarity) with its shift of the crop's centre, its
    rotation and its zoom each held within `limits`: a head carried further would pull the face
    off its neck, fold the stretched neck (head_motion_map) or leave the face's region."""
    change = np.asarray(change, np.float64)
    scale = math.hypot(change[0, 0], change[1, 0])
    angle = math.atan2(change[1, 0], change[0, 0])
    centre = np.array([(size - 1) / 2] * 2)
    shift = change[:, :2] @ centre + change[:, 2] - centre
    max_shift, max_roll, max_zoom = limits
    length = float(np.hypot(*shift))
    shift = shift * min(1.0, max_shift * size / max(length, 1e-12))
    angle = float(np.clip(angle, -math.radians(max_roll), math.radians(max_roll)))
    scale = float(np.clip(scale, 1 / max_zoom, max_zoom))
    lin = scale * np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    return np.hstack([lin, (centre + shift - lin @ centre)[:, None]])


def scale_head_change(change: np.ndarray, size: int, amount: float) -> np.ndarray:
    """`change` (head_change) taken `amount` of the way from no move: its shift of the crop's
    centre, its roll and its log-zoom each scaled by `amount`."""
    change = np.asarray(change, np.float64)
    scale = math.hypot(change[0, 0], change[1, 0]) ** amount
    angle = math.atan2(change[1, 0], change[0, 0]) * amount
    centre = np.array([(size - 1) / 2] * 2)
    shift = (change[:, :2] @ centre + change[:, 2] - centre) * amount
    lin = scale * np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    return np.hstack([lin, (centre + shift - lin @ centre)[:, None]])


def fit_head_change(change: np.ndarray, transform: np.ndarray, shape: tuple[int, ...], size: int,
                    tolerance: float = 1.0) -> np.ndarray:
    """`change` held back (scale_head_change) until the carried head's map takes no pixel on the
    frame's border from more than `tolerance` px outside the frame: a head carried further than
    the frame leaves room to stretch its neck and body over would smear the frame's last rows
    into streaks; it is carried as far as the frame allows instead."""
    h, w = shape[:2]
    xs = np.concatenate([np.arange(w), np.arange(w), np.zeros(h), np.full(h, w - 1)]).astype(np.float32)
    ys = np.concatenate([np.zeros(w), np.full(w, h - 1), np.arange(h), np.arange(h)]).astype(np.float32)

    def outside(amount: float) -> float:
        map_x, map_y = head_map(xs, ys, transform, scale_head_change(change, size, amount), size)
        return float(max((-map_x).max(), (map_x - (w - 1)).max(), (-map_y).max(), (map_y - (h - 1)).max()))

    if outside(1.0) <= tolerance:
        return np.asarray(change, np.float64)
    low, high = 0.0, 1.0
    for _ in range(10):
        mid = (low + high) / 2
        low, high = (mid, high) if outside(mid) <= tolerance else (low, mid)
    return scale_head_change(change, size, low)


HEAD_REGION = ((0.0, 0.06), (0.72, 0.88))   # the face mask's ellipse, normalised crop units (centre, radii)
HEAD_FALLOFF = (1.05, 2.0)   # the background moves with the head inside this many radii, not beyond the second
BODY_FALLOFF = 1.6           # ... below the chin, not beyond this many: the neck stretches, the shoulders stay
FADE_WIDTH = 2.5             # the fade is at least this many times the head's move wide (radii): never folds


def head_falloff(change: np.ndarray, size: int) -> tuple[float, float, float]:
    """(inner, outer, body): HEAD_FALLOFF and BODY_FALLOFF, each fade widened to FADE_WIDTH times
    the carried head's largest move (in the face ellipse's radii) on the ellipse halfway across
    the fade. The fade's steepest slope is 1.5 of its mean, so the map's Jacobian stays above
    about 1 - 1.5 / FADE_WIDTH: a head carried far stretches the background over a wider band
    instead of folding it; a small move keeps the fixed fades (the shoulders still)."""
    (cx, cy), (rx, ry) = HEAD_REGION
    inner, outer = HEAD_FALLOFF
    angle = np.linspace(0, 2 * np.pi, 32, endpoint=False)
    unit = np.array([rx, ry]) * size / 2
    reach = inner
    for _ in range(3):   # the move grows outwards under a turn or a zoom: measure it mid-fade
        radius = (inner + reach) / 2
        ring = np.stack([cx + radius * rx * np.cos(angle), cy + radius * ry * np.sin(angle)], 1)
        pixels = ((ring + 1) * size - 1) / 2
        move = (transform_points(np.asarray(change, np.float64), pixels) - pixels) / unit
        reach = inner + FADE_WIDTH * float(np.hypot(move[:, 0], move[:, 1]).max())
    return inner, max(outer, reach), max(BODY_FALLOFF, reach)


def head_motion_map(shape: tuple[int, ...], transform: np.ndarray, change: np.ndarray, size: int
                    ) -> tuple[tuple[int, int], np.ndarray, np.ndarray] | None:
    """Where move_head takes each pixel of the frame region the moved head can reach from:
    ((x0, y0), map_x, map_y), the maps float32 frame coordinates over the region from (x0, y0);
    None when the region is empty. Rigid inside the face ellipse, fading to still by
    HEAD_FALLOFF[1] radii to the sides and above and by BODY_FALLOFF radii below the chin, or
    wider for a head carried far (head_falloff)."""
    moved = moved_transform(transform, change)
    (cx, cy), (rx, ry) = HEAD_REGION
    outer = max(head_falloff(change, size)[1:])
    # the frame region the moving part can reach: the outer ellipse's box, in the moved face's crop
    corners = np.array([[cx - rx * outer, cy - ry * outer], [cx + rx * outer, cy - ry * outer],
                        [cx - rx * outer, cy + ry * outer], [cx + rx * outer, cy + ry * outer]])
    box = transform_points(invert_affine(moved), ((corners + 1) * size - 1) / 2)
    h, w = shape[:2]
    x0, y0 = np.maximum(np.floor(box.min(0)).astype(int), 0)
    x1, y1 = np.minimum(np.ceil(box.max(0)).astype(int) + 1, [w, h])
    if x1 <= x0 or y1 <= y0:
        return None
    xs, ys = np.meshgrid(np.arange(x0, x1, dtype=np.float32), np.arange(y0, y1, dtype=np.float32))
    map_x, map_y = head_map(xs, ys, transform, change, size)
    return (int(x0), int(y0)), map_x, map_y


def head_map(xs: np.ndarray, ys: np.ndarray, transform: np.ndarray, change: np.ndarray, size: int
             ) -> tuple[np.ndarray, np.ndarray]:
    """head_motion_map at the frame pixels (xs, ys): the frame coordinates each comes from."""
    moved = moved_transform(transform, change)
    back = compose(invert_affine(transform), moved)   # frame → frame: where each moved pixel comes from
    (cx, cy), (rx, ry) = HEAD_REGION
    inner, outer, body = head_falloff(change, size)
    u = (2 * (moved[0, 0] * xs + moved[0, 1] * ys + moved[0, 2]) + 1) / size - 1
    v = (2 * (moved[1, 0] * xs + moved[1, 1] * ys + moved[1, 2]) + 1) / size - 1
    r = np.sqrt(((u - cx) / rx) ** 2 + ((v - cy) / ry) ** 2)
    below = np.clip((v - cy) / ry, 0.0, 1.0)   # 0 level with the face's centre and above, 1 at the chin and under
    reach = outer + (body - outer) * below * below * (3 - 2 * below)
    t = np.clip((r - inner) / (reach - inner), 0.0, 1.0)
    weight = 1.0 - t * t * (3 - 2 * t)
    map_x = xs + weight * (back[0, 0] * xs + back[0, 1] * ys + back[0, 2] - xs)
    map_y = ys + weight * (back[1, 0] * xs + back[1, 1] * ys + back[1, 2] - ys)
    return map_x.astype(np.float32), map_y.astype(np.float32)


def move_head(image: np.ndarray, transform: np.ndarray, change: np.ndarray, size: int) -> np.ndarray:
    """`image` with its head (the face of the frame→crop `transform`, crop side `size`) moved by
    `change` (head_change) and the background around it following smoothly (head_motion_map:
    where the head leaves, the background is stretched over the gap rather than torn; the
    head's old edge does not stay behind; the shoulders stay where they are)."""
    if np.abs(change - np.eye(2, 3)).max() < 1e-4:
        return image
    mapped = head_motion_map(image.shape, transform, change, size)
    if mapped is None:
        return image
    (x0, y0), map_x, map_y = mapped
    out = image.copy()
    out[y0:y0 + map_x.shape[0], x0:x0 + map_x.shape[1]] = cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR,
                                                                   borderMode=cv2.BORDER_REPLICATE)
    return out
