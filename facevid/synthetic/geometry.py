"""The synthetic head's 3-D geometry: features on a tapered ellipsoid, posed, projected; its 68 landmarks."""

from __future__ import annotations

import functools
import math

import numpy as np

from facevid.synthetic.factors import HAIR_STYLES, Identity, Motion

_EYE_Y = 0.40  # eye line, fraction of the crop from the top (frontal pose)
_SS_PIXELS = 192  # supersample so the drawing canvas has at least this many pixels a side (min. 2x)
_SHIFT = 4  # fractional bits for cv2 polygon vertices
_PIVOT = np.array([0.0, 0.04, -0.08])  # rotation centre in the head frame (behind the head centre)
_NECK_FOLLOW = (0.35, 0.25, 0.5)  # fraction of yaw/pitch/roll the neck follows
_LIGHT = np.array([-0.45, -0.55, 1.0]) / np.linalg.norm([-0.45, -0.55, 1.0])
_MAX_GAP = 0.085  # lip gap at mouth_open = 1 (crop units)

_S13 = np.linspace(-1.0, 1.0, 13)  # contains -1, -1/3, 1/3, 1 (eye landmarks) and every 3rd (brows)
_SM = np.array([-1, -0.8, -0.62, -0.45, -0.28, -0.14, 0, 0.14, 0.28, 0.45, 0.62, 0.8, 1.0])  # mouth samples
_ANG = np.linspace(0, 2 * np.pi, 16, endpoint=False)
_CIRCLE = np.stack([np.cos(_ANG), np.sin(_ANG)], 1)

# Landmark positions inside the per-frame polygons (see _features).
_EYE_LM = np.array([0, 4, 8, 12, 13 + 4, 13 + 8])  # in a 26-point eye outline: upper 0..12, lower reversed
_MOUTH_OUT_LM = np.array([0, 2, 4, 6, 8, 10, 12, 15, 17, 19, 21, 23])
_MOUTH_IN_LM = np.array([0, 3, 6, 9, 12, 16, 19, 22])


class _Head:
    """Per-identity head model: everything that does not depend on motion.

    ``static`` stacks all motion-independent 3-D points (head frame); ``parts`` maps a
    part name to its slice; ``drop_w`` weights how much each point follows the jaw.
    """

    def __init__(self, idn: Identity):
        self.idn = idn
        a = idn.face_width / 2
        forehead = 0.30 + 0.06 * (idn.face_width - 0.56) / 0.14  # eye line to top of skull
        b = (forehead + idn.face_height) / 2
        self.a, self.b, self.c = a, b, 0.95 * a
        self.pivot_y = _EYE_Y - forehead + b  # image y of the head-frame origin
        self.ey = _EYE_Y - self.pivot_y  # eye line in the head frame
        self.n_low = 2.0 + 2.5 * idn.jaw
        self.taper = 0.32 * (1.0 - idn.jaw)
        self.y_nose = self.ey + idn.nose_length
        self.y_mouth = self.y_nose + idn.mouth_offset
        if not 0 <= int(idn.hair_style) < len(HAIR_STYLES):
            raise ValueError(f"hair_style must be in 0..{len(HAIR_STYLES) - 1}, got {idn.hair_style}")
        self.style = HAIR_STYLES[int(idn.hair_style)]

        parts = {**self._surface(), **self._ears(), **self._jaw(), **self._nose()}

        self.parts: dict[str, slice] = {}
        arrays, weights, k = [], [], 0
        for name, arr in parts.items():
            self.parts[name] = slice(k, k + len(arr))
            k += len(arr)
            arrays.append(arr)
            follows_jaw = name in ("skin", "jaw")
            y0 = self.ey + 0.04
            w = np.clip((arr[:, 1] - y0) / (self.y_mouth - y0), 0.0, 1.0) if follows_jaw else np.zeros(len(arr))
            weights.append(w)
        self.static = np.concatenate(arrays)
        self.drop_w = np.concatenate(weights)
        idx = np.arange(k)
        pp = self.parts
        self.nose_idx = np.concatenate([idx[pp["bridge"]][1:], idx[pp["base"]], idx[pp["wings"]], idx[pp["tip"]]])

        # Neck: follows the head only partly, so it is projected on its own.
        nr = 0.52 * a * (1.0 + 0.2 * idn.jaw)
        ring = np.stack([nr * _CIRCLE[:, 0], np.zeros(16), 0.8 * nr * _CIRCLE[:, 1]], 1)
        self.neck = np.concatenate([ring + [0.0, 0.2 * b, 0.0], ring + [0.0, 1.2 - self.pivot_y, 0.0]])

        # Per-frame constants of the eyes.
        w = idn.eye_size / 2
        self.eye_w = w
        self.eye_h_up = idn.eye_openness * w * 1.15
        self.eye_h_lo = idn.eye_openness * w * 0.75
        self.shade_axes = 1.0 / np.array([a * 1.06, b * 1.04, self.c * 1.08]) ** 2
        self.static_t = np.ascontiguousarray((self.static - _PIVOT).T)
        self.features = _Features(self)
        layout = dict(self.parts)
        k = len(self.static)
        for name, cnt, _ in _DYN_LAYOUT:
            layout[name] = slice(k, k + cnt)
            k += cnt
        self.layout = (layout, _landmark_index(layout))

    # parts ------------------------------------------------------------------
    def _surface(self) -> dict[str, np.ndarray]:
        """Head surface samples (their convex hull is the silhouette) and the hair's."""
        idn, a, b = self.idn, self.a, self.b
        parts: dict[str, np.ndarray] = {}
        ys = -b * np.cos(np.linspace(0.0, np.pi, 19))
        phis = np.linspace(-np.pi, np.pi, 32, endpoint=False)
        Y, P = np.meshgrid(ys, phis, indexing="ij")
        X, Z = self._ring(Y, P)
        pts = np.stack([X, Y, Z], -1).reshape(-1, 3)
        phi = P.reshape(-1)
        vol = idn.hair_volume
        if self.style == "bald":
            parts["skin"] = pts
        else:
            skin = pts[:, 1] >= self._hairline(phi)
            hl_phi = np.linspace(-np.pi, np.pi, 48, endpoint=False)
            hl_y = self._hairline(hl_phi)
            hx, hz = self._ring(hl_y, hl_phi)
            hl_pts = np.stack([hx, hl_y, hz], 1)  # the hairline belongs to both
            parts["skin"] = np.concatenate([pts[skin], hl_pts])
            parts["hair"] = self._inflate(np.concatenate([pts[~skin], hl_pts]), vol)
        if self.style == "long":
            yb = 1.1 - self.pivot_y  # below the crop
            ph = np.linspace(0.5 * np.pi - 0.35, 1.5 * np.pi + 0.35, 13)
            curtain = [
                np.stack([wk * (a + vol) * np.sin(ph), np.full_like(ph, y), wk * (self.c + vol) * np.cos(ph)], 1)
                for (y, wk) in ((0.0, 1.0), (self.ey + 0.2, 1.06), (yb, 1.14))
            ]
            parts["long"] = np.concatenate([parts["hair"]] + curtain)
        if self.style == "fringe":
            sf = np.linspace(-1.0, 1.0, 43)
            y_tip = self.ey - 0.098 + 0.035 * sf**2
            y_bot = y_tip - 0.024 * np.abs(np.sin(2.5 * np.pi * sf))
            y_top = np.full_like(sf, self.ey - 0.26)
            xb = 0.93 * self._half_width(y_bot) * sf
            xt = 0.93 * self._half_width(y_top) * sf
            bottom = self.lift(xb, y_bot, 0.6 * vol)
            top = self.lift(xt, y_top, 0.6 * vol)
            parts["fringe"] = np.concatenate([bottom, top[::-1]])
        return parts

    def _ears(self) -> dict[str, np.ndarray]:
        """Ears: flat ellipses flaring backwards from the side of the head."""
        parts: dict[str, np.ndarray] = {}
        es = self.idn.ear_size
        ey0 = self.ey + 0.045
        for side, tag in ((-1.0, "l"), (1.0, "r")):
            root_x = side * float(self._half_width(ey0))
            u = np.array([side * 0.62, 0.0, -0.78])
            ey_ = np.array([0.0, 1.0, 0.0])
            centre = np.array([root_x, ey0, -0.03]) + 0.275 * es * u
            parts["ear_" + tag] = centre + 0.275 * es * _CIRCLE[:, :1] * u + 0.5 * es * _CIRCLE[:, 1:] * ey_
            inner = centre + 0.1 * es * u
            parts["earin_" + tag] = inner + 0.22 * es * _CIRCLE[:, :1] * u + 0.3 * es * _CIRCLE[:, 1:] * ey_
        return parts

    def _jaw(self) -> dict[str, np.ndarray]:
        """Jaw landmarks 0-16: the frontal silhouette of the lower face at equal arc length."""
        yy = np.linspace(self.ey + 0.01, self.b, 200)
        xx = self._half_width(yy)
        cx = np.concatenate([-xx, xx[::-1][1:]])
        cy = np.concatenate([yy, yy[::-1][1:]])
        arc = np.concatenate([[0.0], np.cumsum(np.hypot(np.diff(cx), np.diff(cy)))])
        q = np.linspace(0.0, arc[-1], 17)
        jy = np.interp(q, arc, cy)
        return {"jaw": np.stack([np.interp(q, arc, cx), jy, self._shear(jy)], 1)}

    def _nose(self) -> dict[str, np.ndarray]:
        """Nose: bridge 27-30 (tip protrudes), base 31-35, wings and tip for the silhouette."""
        parts: dict[str, np.ndarray] = {}
        pr, nw, yb_ = self.idn.nose_protrusion, self.idn.nose_width, self.y_nose
        ytip = yb_ - 0.018
        tb = np.array([0.0, 1 / 3, 2 / 3, 1.0])
        parts["bridge"] = self.lift(np.zeros(4), self.ey + tb * (ytip - self.ey), pr * tb**1.6)
        parts["base"] = self.lift(
            np.array([-1.0, -0.5, 0.0, 0.5, 1.0]) * nw,
            yb_ - np.array([0.012, 0.003, 0.0, 0.003, 0.012]),
            pr * np.array([0.15, 0.4, 0.55, 0.4, 0.15]),
        )
        parts["wings"] = self.lift(
            np.array([-1.08, -0.9, 0.9, 1.08]) * nw,
            yb_ - np.array([0.035, 0.055, 0.055, 0.035]),
            pr * np.array([0.1, 0.35, 0.35, 0.1]),
        )
        parts["tip"] = self.lift(0.55 * nw * _CIRCLE[:, 0], ytip - 0.005 + 0.45 * nw * _CIRCLE[:, 1], pr * 0.95)
        for sx, tag in ((-1.0, "l"), (1.0, "r")):
            parts["nostril_" + tag] = self.lift(
                sx * 0.5 * nw + 0.28 * nw * _CIRCLE[:, 0], yb_ - 0.008 + 0.13 * nw * _CIRCLE[:, 1], pr * 0.3
            )
        return parts

    # surface helpers --------------------------------------------------------
    def _profile(self, y):
        y = np.asarray(y, dtype=np.float64)
        r = np.minimum(np.abs(y) / self.b, 1.0)
        n = np.where(y > 0, self.n_low, 2.0)
        return (1.0 - r**n) ** (1.0 / n)

    def _half_width(self, y):
        t = np.clip(np.asarray(y, dtype=np.float64) / self.b, 0.0, 1.0)
        return self.a * self._profile(y) * (1.0 - self.taper * t**1.5)

    def _shear(self, y):
        t = np.clip(np.asarray(y, dtype=np.float64) / self.b, 0.0, 1.0)
        return 0.5 * self.c * t**1.6

    def _ring(self, y, phi):
        return self._half_width(y) * np.sin(phi), self._shear(y) + self.c * self._profile(y) * np.cos(phi)

    def surf_z(self, x, y):
        """Depth of the front surface at head-frame (x, y)."""
        y = np.asarray(y, dtype=np.float64)
        t = np.clip(y / self.b, 0.0, 1.0)
        prof = self._profile(y)
        hw = np.maximum(self.a * prof * (1.0 - self.taper * t**1.5), 1e-6)
        r = np.minimum(np.abs(x) / hw, 1.0)
        return 0.5 * self.c * t**1.6 + self.c * prof * np.sqrt(1.0 - r * r)

    def lift(self, x, y, dz=0.0):
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        return np.stack([x, y, self.surf_z(x, y) + dz], -1)

    def _hairline(self, phi):
        idn = self.idn
        ey = self.ey
        front = ey - 0.16 - 0.08 * idn.hairline
        side = ey + 0.02
        nape = ey + 0.12
        ap = np.abs(phi - 0.35 * idn.hair_part * np.cos(phi))
        t = np.clip(ap / (np.pi / 2), 0.0, 1.0)
        y = front + (side - front) * t**1.4
        back = np.clip((ap - np.pi / 2) / (np.pi / 2), 0.0, 1.0)
        return np.where(ap <= np.pi / 2, y, side + (nape - side) * back)

    def _inflate(self, p, vol):
        out = p.copy()
        out[:, 0] *= (self.a + vol) / self.a
        up = out[:, 1] < 0
        out[up, 1] *= (self.b + 1.5 * vol) / self.b
        sh = self._shear(p[:, 1])
        out[:, 2] = sh + (p[:, 2] - sh) * (self.c + vol) / self.c
        return out


@functools.lru_cache(maxsize=256)
def _head_cached(identity: Identity) -> _Head:
    return _Head(identity)


def _head(identity: Identity) -> _Head:
    try:
        return _head_cached(identity)
    except TypeError:  # unhashable field values (e.g. a list for a colour)
        return _Head(identity)


def _rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    cy, sy = math.cos(yaw), math.sin(yaw)
    cp, sp = math.cos(pitch), math.sin(pitch)
    cr, sr = math.cos(roll), math.sin(roll)
    ry = np.array([[cy, 0.0, sy], [0.0, 1.0, 0.0], [-sy, 0.0, cy]])
    rx = np.array([[1.0, 0.0, 0.0], [0.0, cp, sp], [0.0, -sp, cp]])
    rz = np.array([[cr, -sr, 0.0], [sr, cr, 0.0], [0.0, 0.0, 1.0]])
    return rz @ rx @ ry


def _project(p: np.ndarray, R: np.ndarray, pivot_y: float) -> np.ndarray:
    """Head frame -> crop-normalised (u, v) plus camera depth."""
    q = (p - _PIVOT) @ R.T
    q += _PIVOT + np.array([0.5, pivot_y, 0.0])
    return q


def _clampf(v: float, lo: float, hi: float) -> float:
    return lo if v < lo else hi if v > hi else float(v)


# Per-frame feature points, in this order (sizes fixed): name -> (count, depth offset).
_DYN_LAYOUT = (
    ("eye_l", 26, 0.002),
    ("eye_r", 26, 0.002),
    ("iris_l", 48, 0.002),  # iris 16, pupil 16, glint 16
    ("iris_r", 48, 0.002),
    ("brow_l", 26, 0.004),
    ("brow_r", 26, 0.004),
    ("browlm_l", 5, 0.004),
    ("browlm_r", 5, 0.004),
    ("lips", 26, 0.008),
    ("inner", 26, 0.009),
    ("teeth", 26, 0.010),
    ("seam", 13, 0.011),
)
_M0 = sum(n for name, n, _ in _DYN_LAYOUT[:8])  # first mouth point
_N_DYN = sum(n for _, n, _ in _DYN_LAYOUT)

# Mouth shape functions of _SM.
_SM2 = _SM**2
_SM_IN2 = (0.9 * _SM) ** 2
_SM_07 = np.maximum(1.0 - _SM2, 0.0) ** 0.7
_SM_04BOW = np.maximum(1.0 - _SM2, 0.0) ** 0.4 * (1.0 - 0.35 * np.exp(-((_SM / 0.18) ** 2)))
_SM_045 = np.maximum(1.0 - _SM2, 0.0) ** 0.45
_TEETH_H = 0.3 * _MAX_GAP * np.maximum(1.0 - _SM2, 0.0) ** 0.5


class _Features:
    """Per-identity constants of the motion-dependent features (eyes, brows, mouth)."""

    def __init__(self, h: _Head):
        idn = h.idn
        w = h.eye_w
        side = np.array([[-1.0], [1.0]])
        ex = side * idn.eye_spacing / 2
        r = idn.iris_size * w
        circ = np.concatenate([r * _CIRCLE, 0.45 * r * _CIRCLE, 0.2 * r * _CIRCLE + np.array([-0.35 * r, -0.35 * r])])
        px = np.clip(ex + circ[None, :, 0], ex - w, ex + w)  # (2, 48)
        s = np.concatenate([np.broadcast_to(_S13, (2, 13)), (px - ex) / w], 1)  # (2, 61)
        base = np.maximum(1.0 - s * s, 0.0)
        tilt = -idn.eye_tilt * side * s  # outer corner (side*s = 1) up for tilt > 0
        self.eye_lo0 = h.ey + tilt
        self.eye_lo1 = h.eye_h_lo * base**0.7
        self.eye_up = h.ey + tilt - h.eye_h_up * base**0.6
        self.iris_y = h.ey + 0.1 * r + circ[None, :, 1]
        inner_w = np.clip(-side * _S13, 0.0, 1.0)  # 1 at the inner end of a brow
        self.brow_y0 = h.ey - 0.055 - 0.2 * idn.eye_openness * w - idn.brow_arch * (1 - _S13**2) + 0 * side
        self.brow_y1 = -0.022 - 0.009 * inner_w
        self.brow_th = 0.5 * idn.brow_thickness * (0.55 + 0.45 * (0.5 + 0.5 * inner_w))
        xb = ex + side * 0.1 * w + 1.3 * w * _S13
        there_and_back = [*range(13), *range(12, -1, -1)]
        outline_x = (ex + w * _S13)[:, there_and_back]
        x = np.concatenate([outline_x.ravel(), px.ravel(), xb[:, there_and_back].ravel(), xb[:, ::3].ravel()])
        self.x_fixed = x  # x of every point before the mouth
        self.dz = np.concatenate([np.full(n, dz) for _, n, dz in _DYN_LAYOUT])
        self.y_mouth = h.y_mouth
        self.mouth_width = idn.mouth_width
        self.upper_lip = idn.upper_lip
        self.lower_lip = idn.lower_lip


def _features(h: _Head, m: Motion) -> tuple[np.ndarray, np.ndarray, float]:
    """Head-frame x, y of all motion-dependent feature points (layout _DYN_LAYOUT), and the lip gap."""
    f = h.features
    blink = _clampf(m.blink, 0.0, 1.0)
    smile = _clampf(m.smile, -1.0, 1.0)
    o = _clampf(m.mouth_open, 0.0, 1.0)
    brows = _clampf(m.brows, -1.0, 1.0)
    squint = 0.3 * max(smile, 0.0)
    X = np.empty(_N_DYN)
    Y = np.empty(_N_DYN)
    X[:_M0] = f.x_fixed

    lower = f.eye_lo0 + (1.0 - squint) * f.eye_lo1  # (2, 61): 13 lid samples, 48 iris points
    upper = f.eye_up + blink * (lower - f.eye_up)
    Y[0:52] = np.concatenate([upper[:, :13], lower[:, 12::-1]], 1).ravel()
    Y[52:148] = np.clip(f.iris_y, upper[:, 13:], lower[:, 13:]).ravel()
    by = f.brow_y0 + brows * f.brow_y1  # (2, 13)
    Y[148:200] = np.concatenate([by - f.brow_th, (by + f.brow_th)[:, ::-1]], 1).ravel()
    Y[200:210] = by[:, ::3].ravel()

    gap = _MAX_GAP * o
    mw = f.mouth_width * (1.0 + 0.14 * max(smile, 0.0) - 0.04 * max(-smile, 0.0) - 0.08 * o)
    corner = -0.022 * smile + 0.25 * gap  # corner height relative to the mouth line (y down)
    open_up = 0.3 * gap * _SM_07
    open_lo = 0.7 * gap * _SM_07
    line_in = f.y_mouth + corner * _SM_IN2
    line_out = f.y_mouth + corner * _SM2
    up_in = line_in - open_up
    lo_in = line_in + open_lo
    up_out = line_out - open_up - f.upper_lip * _SM_04BOW
    lo_out = line_out + open_lo + f.lower_lip * _SM_045
    teeth_lo = up_in + np.minimum(_TEETH_H, lo_in - up_in)
    x_out = mw * _SM
    x_in = 0.9 * x_out
    k = _M0
    for xs, ya, yb in ((x_out, up_out, lo_out), (x_in, up_in, lo_in), (x_in, up_in, teeth_lo)):
        X[k : k + 13] = xs
        X[k + 13 : k + 26] = xs[::-1]
        Y[k : k + 13] = ya
        Y[k + 13 : k + 26] = yb[::-1]
        k += 26
    X[k : k + 13] = x_in
    Y[k : k + 13] = 0.5 * (up_in + lo_in)
    return X, Y, gap


class _Frame:
    """Projected geometry of one frame: ``q`` is (N, 2) crop-normalised points."""

    __slots__ = ("head", "R", "q", "parts", "gap", "lm_idx")


def _frame(identity: Identity, motion: Motion) -> _Frame:
    h = _head(identity)
    X, Y, gap = _features(h, motion)
    f = h.features
    dyn = np.stack([X, Y, h.surf_z(X, Y) + f.dz])
    stat = h.static_t  # (3, N), pivot already subtracted
    if gap > 0.0:
        stat = stat.copy()
        stat[1] += (0.45 * gap) * h.drop_w
    R = _rotation(motion.yaw, motion.pitch, motion.roll)
    dyn -= _PIVOT[:, None]
    Q = R[:2] @ np.concatenate([stat, dyn], 1)
    Q += np.array([[0.5 + _PIVOT[0]], [h.pivot_y + _PIVOT[1]]])
    fr = _Frame()
    fr.head, fr.R, fr.gap = h, R, gap
    fr.q = Q.T
    fr.parts, fr.lm_idx = h.layout
    return fr


def _landmark_index(parts: dict[str, slice]) -> np.ndarray:
    def at(name, idx=None):
        r = np.arange(parts[name].start, parts[name].stop)
        return r if idx is None else r[idx]

    return np.concatenate(
        [
            at("jaw"),
            at("browlm_l"),
            at("browlm_r"),
            at("bridge"),
            at("base"),
            at("eye_l", _EYE_LM),
            at("eye_r", _EYE_LM),
            at("lips", _MOUTH_OUT_LM),
            at("inner", _MOUTH_IN_LM),
        ]
    )


def landmarks(identity: Identity, motion: Motion, size: int = 64) -> np.ndarray:
    """(68, 2) float64 landmark pixel coordinates in the iBUG/dlib 68-point order.

    They are projections of the very points the renderer draws (jaw = frontal outline of
    the lower face, brows = brow centre lines, eyes = lid curves, mouth = lip outlines).
    """
    fr = _frame(identity, motion)
    return fr.q[fr.lm_idx] * size - 0.5


def landmarks_clip(identity: Identity, motions, size: int = 64) -> np.ndarray:
    """(T, 68, 2) landmarks for a sequence of motions."""
    if len(motions) == 0:
        return np.zeros((0, 68, 2))
    return np.stack([landmarks(identity, m, size) for m in motions])
