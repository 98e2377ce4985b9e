"""The 68 iBUG 300-W landmark indices (dlib's and face-alignment's order), all in one place.

Sides are the image's: LEFT_EYE is the eye on the image's left (the person's right eye)."""

from __future__ import annotations

JAW = slice(0, 17)
LEFT_BROW, RIGHT_BROW = slice(17, 22), slice(22, 27)
BROWS_AND_EYES = slice(17, 48)
NOSE = slice(27, 36)
LEFT_EYE, RIGHT_EYE = slice(36, 42), slice(42, 48)
MOUTH = slice(48, 68)
OUTER_LIPS, INNER_LIPS = slice(48, 60), slice(60, 68)
EYES_AND_MOUTH = slice(36, 68)
# (start, end) of the parts: jaw, brows, nose, eyes, mouth
PARTS = ((0, 17), (17, 27), (27, 36), (36, 48), (48, 68))
UPPER_INNER_LIP, LOWER_INNER_LIP = [61, 62, 63], [67, 66, 65]   # facing pairs: the lips' gap
CHIN, LOWER_LIP_BOTTOM = 8, 57
# nose bridge, nostrils and eye corners: points an expression hardly moves (they give the pose)
STABLE = [27, 28, 29, 30, 31, 33, 35, 36, 39, 42, 45]
# the indices that correspond to the 5-point template (eye corners right to left, nose base)
FIVE_FROM_68 = (45, 42, 36, 39, 33)
# each point's mirror image under a horizontal flip
FLIP_68 = (list(range(16, -1, -1)) + list(range(26, 21, -1)) + list(range(21, 16, -1)) + [27, 28, 29, 30]
           + [35, 34, 33, 32, 31] + [45, 44, 43, 42, 47, 46] + [39, 38, 37, 36, 41, 40]
           + [54, 53, 52, 51, 50, 49, 48] + [59, 58, 57, 56, 55] + [64, 63, 62, 61, 60] + [67, 66, 65])
