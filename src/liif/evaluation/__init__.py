"""The field's evaluation protocol (spec 6): datasets, test-time degradations, PSNR/SSIM and evaluation runs."""

from liif.evaluation.runner import SCALE_PRESETS, EvalResults, ImageScore, evaluate

__all__ = ["evaluate", "EvalResults", "ImageScore", "SCALE_PRESETS"]
