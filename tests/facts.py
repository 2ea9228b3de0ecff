"""Facts about the reference configurations (spec sections 2.5-2.7) and evaluation (spec 6), in one place for every
test that checks them."""

from __future__ import annotations

import numpy as np

EDSR = {"name": "edsr-baseline", "args": {"no_upsampling": True}}
RDN = {"name": "rdn", "args": {"no_upsampling": True}}
MLP = {"name": "mlp", "args": {"out_dim": 3, "hidden_list": [256, 256, 256, 256]}}


def liif_spec(encoder: dict = EDSR, imnet: dict | None = MLP, **switches: bool) -> dict:
    return {"name": "liif", "args": {"encoder_spec": encoder, **({"imnet_spec": imnet} if imnet else {}), **switches}}


def metasr_spec(encoder: dict = EDSR) -> dict:
    return {"name": "metasr", "args": {"encoder_spec": encoder}}


def lte_spec(encoder: dict = EDSR) -> dict:
    return {"name": "lte", "args": {"encoder_spec": encoder, "imnet_spec": MLP_LTE, "hidden_dim": 256}}


MLP_LTE = {"name": "mlp", "args": {"out_dim": 3, "hidden_list": [256, 256, 256]}}

# name -> (spec, number of state-dict keys, number of parameters)
CONFIGS = {
    "edsr-baseline-liif": (liif_spec(), 82, 1_567_323),
    "edsr-baseline-liif-c": (liif_spec(cell_decode=False), 82, 1_566_811),
    "edsr-baseline-liif-u": (liif_spec(feat_unfold=False), 82, 1_436_251),
    "edsr-baseline-liif-e": (liif_spec(local_ensemble=False), 82, 1_567_323),
    "edsr-baseline-liif-d": (liif_spec(imnet={"name": "mlp", "args": {"out_dim": 3, "hidden_list": [256, 256]}}),
                             78, 1_435_739),
    "edsr-baseline-x2": (liif_spec({"name": "edsr-baseline", "args": {}}, None), 76, 1_369_883),
    "rdn-liif": (liif_spec(RDN), 306, 22_320_835),
    "rdn-x2": (liif_spec({"name": "rdn", "args": {}}, None), 300, 22_123_395),
    "edsr-baseline-metasr": (metasr_spec(), 76, 1_665_560),
    "rdn-metasr": (metasr_spec(RDN), 300, 22_419_072),
    "edsr-baseline-lte": (lte_spec(), 85, 1_714_267),  # spec 2.8 and Appendix B
    "rdn-lte": (lte_spec(RDN), 309, 22_467_779),
}
# The configurations the reference trains on DIV2K (configs/train-div2k/<name>.yaml).
TRAINED = ("edsr-baseline-liif", "edsr-baseline-liif-c", "edsr-baseline-liif-u", "edsr-baseline-liif-e",
           "edsr-baseline-liif-d", "rdn-liif", "edsr-baseline-metasr", "rdn-metasr", "edsr-baseline-lte", "rdn-lte")
# A small instance of every registered model, for tests that run each of them.
SMALL = {
    "edsr-baseline": {"name": "edsr-baseline", "args": {"n_resblocks": 2, "n_feats": 8, "no_upsampling": True}},
    "edsr": {"name": "edsr", "args": {"n_resblocks": 2, "n_feats": 8, "scale": 2}},
    "rdn": {"name": "rdn", "args": {"G0": 8, "RDNconfig": "A", "no_upsampling": True}},
    "mlp": {"name": "mlp", "args": {"in_dim": 6, "out_dim": 3, "hidden_list": [16]}},
    "liif": liif_spec({"name": "edsr-baseline", "args": {"n_resblocks": 1, "n_feats": 8, "no_upsampling": True}},
                      {"name": "mlp", "args": {"out_dim": 3, "hidden_list": [16, 16]}}),
    "metasr": metasr_spec({"name": "edsr-baseline", "args": {"n_resblocks": 1, "n_feats": 4, "no_upsampling": True}}),
    "lte": {"name": "lte", "args": {
        "encoder_spec": {"name": "edsr-baseline", "args": {"n_resblocks": 1, "n_feats": 8, "no_upsampling": True}},
        "imnet_spec": {"name": "mlp", "args": {"out_dim": 3, "hidden_list": [16, 16]}}, "hidden_dim": 16}},
}
# EDSR's luminance weights, R, G, B (spec 6.2).
EDSR_Y = np.array([65.738, 129.057, 25.064]) / 256
# Set5 PSNR-Y by scale: reference test.py with the released edsr-baseline-liif.pth, LR by PIL bicubic from the
# top-left-cropped HR, output not quantised (issue 5); and PIL bicubic from the same LR.
REFERENCE_Y_PSNR = {2: 37.9971, 3: 34.4179, 4: 32.2587, 6: 28.9551, 8: 26.9824}
BICUBIC_Y_PSNR = {2: 33.67, 3: 30.40, 4: 28.43, 6: 25.93, 8: 24.40}
# The registered models that decode coordinates (the renderer's ImplicitModel): the tests render each of them.
IMPLICIT = ("liif", "lte", "metasr")
