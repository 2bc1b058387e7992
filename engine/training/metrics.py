"""Video quality metrics against ground truth: PSNR, SSIM, L1, subject-region PSNR, the
subject's sharpness and its flicker.

All take (F,H,W,3) uint8 or float arrays in [0, 255]. Per-frame values are averaged over the
frames, as the paper reports them. Subject-region PSNR counts only the pixels inside a mask (the
union of the ground-truth and reference subject masks), because whole-frame PSNR rewards a
blurred still: the subject is a small part of the frame and the background dominates the mean.
"""

from __future__ import annotations

import numpy as np

PEAK = 255.0


def _as_float(video: np.ndarray) -> np.ndarray:
    return np.asarray(video, dtype=np.float64)


def psnr_from_mse(mse: np.ndarray | float) -> np.ndarray | float:
    """PSNR in dB for a mean squared error on the 0..255 scale (identical images: inf)."""
    mse = np.asarray(mse, dtype=np.float64)
    with np.errstate(divide="ignore"):
        return np.where(mse > 0, 10.0 * np.log10(PEAK**2 / np.maximum(mse, 1e-300)), np.inf)


def psnr(video: np.ndarray, target: np.ndarray) -> float:
    """Mean over frames of the per-frame PSNR (inf only if every frame is identical)."""
    error = (_as_float(video) - _as_float(target)) ** 2
    per_frame = psnr_from_mse(error.reshape(len(error), -1).mean(axis=1))
    return float(np.mean(per_frame))


def masked_psnr(video: np.ndarray, target: np.ndarray, masks: np.ndarray) -> float:
    """Mean over frames of the PSNR inside ``masks`` (F,H,W) bool; frames without mask skipped."""
    masks = np.asarray(masks, dtype=bool)
    error = ((_as_float(video) - _as_float(target)) ** 2).mean(axis=-1)  # (F,H,W)
    counts = masks.reshape(len(masks), -1).sum(axis=1)
    sums = (error * masks).reshape(len(masks), -1).sum(axis=1)
    present = counts > 0
    if not present.any():
        raise ValueError("masked_psnr: every mask is empty; there is no subject region")
    return float(np.mean(psnr_from_mse(sums[present] / counts[present])))


def l1(video: np.ndarray, target: np.ndarray) -> float:
    """Mean absolute error on the 0..1 scale."""
    return float(np.mean(np.abs(_as_float(video) - _as_float(target))) / PEAK)


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    x = np.arange(size) - (size - 1) / 2
    kernel = np.exp(-(x**2) / (2 * sigma**2))
    return kernel / kernel.sum()


def _filter(images: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Separable 'valid' Gaussian filter over axes 1 and 2 of (N,H,W,C)."""
    size = len(kernel)
    rows = sum(kernel[i] * images[:, i : images.shape[1] - size + 1 + i] for i in range(size))
    return sum(kernel[i] * rows[:, :, i : rows.shape[2] - size + 1 + i] for i in range(size))


def ssim(video: np.ndarray, target: np.ndarray) -> float:
    """Mean SSIM (Wang et al. 2004: 11x11 Gaussian window, sigma 1.5, K1 0.01, K2 0.03) over
    frames and colour channels."""
    x, y = _as_float(video), _as_float(target)
    if x.shape != y.shape:
        raise ValueError(f"ssim: shapes differ, {x.shape} vs {y.shape}")
    kernel = _gaussian_window()
    if min(x.shape[1:3]) < len(kernel):
        raise ValueError(f"ssim: frames of {x.shape[2]}x{x.shape[1]} are smaller than 11x11")
    c1, c2 = (0.01 * PEAK) ** 2, (0.03 * PEAK) ** 2
    mu_x, mu_y = _filter(x, kernel), _filter(y, kernel)
    var_x = _filter(x * x, kernel) - mu_x**2
    var_y = _filter(y * y, kernel) - mu_y**2
    cov = _filter(x * y, kernel) - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / (
        (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
    )
    return float(ssim_map.mean())


def subject_box(masks: np.ndarray) -> tuple[slice, slice]:
    """The rows and columns of the box around every frame's subject ``masks`` (F,H,W)."""
    rows, cols = np.nonzero(np.asarray(masks, dtype=bool).any(axis=0))
    if len(rows) == 0:
        raise ValueError("subject_box: every mask is empty; there is no subject region")
    return slice(rows.min(), rows.max() + 1), slice(cols.min(), cols.max() + 1)


def _laplacian_variance(frames: np.ndarray) -> np.ndarray:
    import cv2

    grey = _as_float(frames).mean(axis=-1)
    return np.array([cv2.Laplacian(frame, cv2.CV_64F).var() for frame in grey])


def sharpness_ratio(video: np.ndarray, target: np.ndarray, subject: np.ndarray) -> float:
    """How much of the truth's detail the subject keeps: the variance of the Laplacian in the
    box around the subject, video over ground truth, averaged over frames. 1 is as sharp as the
    truth; a small render upscaled is near 0 (a blur PSNR does not see)."""
    rows, cols = subject_box(subject)
    ratio = _laplacian_variance(video[:, rows, cols]) / np.maximum(
        _laplacian_variance(target[:, rows, cols]), 1e-9
    )
    return float(ratio.mean())


def flicker(video: np.ndarray, target: np.ndarray, subject: np.ndarray) -> float:
    """Temporal flicker in the subject region: the mean absolute change between consecutive
    frames of the video minus the same for the ground truth (0..255 scale). 0 moves as much as
    the truth; above 0 the video jitters, below it holds stiller than the truth (a frozen
    subject is the most negative)."""
    if len(video) < 2:
        return 0.0
    region = np.asarray(subject, dtype=bool)
    region = region[1:] | region[:-1]
    if not region.any():
        raise ValueError("flicker: every mask is empty; there is no subject region")

    def change(frames: np.ndarray) -> float:
        return float(np.abs(np.diff(_as_float(frames), axis=0)).mean(axis=-1)[region].mean())

    return change(video) - change(target)


def video_metrics(video: np.ndarray, target: np.ndarray, subject: np.ndarray) -> dict[str, float]:
    """The eval table's columns for one video: psnr, ssim, l1, subject_psnr, sharpness,
    flicker."""
    return {
        "psnr": psnr(video, target),
        "ssim": ssim(video, target),
        "l1": l1(video, target),
        "subject_psnr": masked_psnr(video, target, subject),
        "sharpness": sharpness_ratio(video, target, subject),
        "flicker": flicker(video, target, subject),
    }
