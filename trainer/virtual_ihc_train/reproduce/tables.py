"""The papers' tables that ``virtual-ihc-train reproduce`` rebuilds: rows, metrics, protocols, published numbers.

Every published number below was read from the plain-text copies of the papers (``shared/papers``), with the
table it comes from. A row whose method has no preset here (CUT) or whose paper gives no number (a figure only)
is kept with its published values and ``preset=None`` or empty ``published``, so the written table says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

HER2_GROUPS = ("0", "1+", "2+", "3+")

# ------------------------------------------------------------------ protocol texts (what the paper measured)
BN_TEST_PY = (
    "test.py without --eval (bupt-ai-cz/BCI, junyanz): batch norm normalises each image by its own statistics "
    "(batch 1), dropout on; read from the checkpoint header (bn_stats slide, dropout sample, seed 0)"
)
BN_INSTANCE = "instance norm (per image in either mode), no dropout; the checkpoint header's mode"
PSNR_BCI = (
    "mean of per-image skimage PSNR/SSIM (BCI/ASP evaluate.py): data_range 255, RGB uint8, SSIM 7x7 window "
    "with channel_axis"
)
PSNR_UNSTATED = (
    "not stated in the paper; BCI's evaluate.py convention used (mean of per-image values, range 255)"
)
SHORT_BCI = "PSNR/SSIM per-image mean, range 255, RGB uint8"
CROP_NONE = "none: full-resolution images, never resized"


@dataclass(frozen=True)
class Column:
    """One metric column: ``key`` in our summary, its header, format, and whether larger is better."""

    key: str
    header: str
    fmt: str = "{:.4f}"
    higher_is_better: bool = True


@dataclass(frozen=True)
class Row:
    """A row of the paper's table: the method, how we train it, and what the paper printed."""

    key: str  # run sub-folder and ``--rows`` / ``--set ROW:key=value`` name
    label: str  # as the paper's table names it
    preset: str | None  # None: not trainable here (``note`` says why)
    overrides: dict[str, Any] = field(default_factory=dict)
    multiscale: bool = False
    published: dict[str, dict[str, float]] = field(default_factory=dict)  # group -> column key -> value
    note: str = ""  # how our run differs from the paper's
    bn_dropout: str = BN_TEST_PY


@dataclass(frozen=True)
class PaperTable:
    key: str
    title: str
    citation: str  # paper, venue, table number(s)
    layout: str  # bci | mist | ki67 (see preflight.LAYOUTS)
    metrics: tuple[str, ...]  # evaluate's metric names (ki67: the positive-cell ratio, computed here)
    columns: tuple[Column, ...]
    groups: tuple[str, ...]  # "overall" and/or HER2 classes
    selection: str  # last | best_ki67_ratio
    selection_text: str
    psnr_convention: str
    short_convention: str  # the same, in a few words, for each row's protocol cell
    crop: str
    features: str  # the feature extractors the paper's metrics used (our weights' checksums are added at run)
    eval_split: str
    rows: tuple[Row, ...]
    common: dict[str, Any] = field(default_factory=dict)  # overrides for every trainable row
    notes: tuple[str, ...] = ()


PSNR = Column("psnr", "PSNR (dB)", "{:.3f}")
SSIM = Column("ssim", "SSIM", "{:.4f}")
FID = Column("fid", "FID", "{:.2f}", higher_is_better=False)


def _g(**by_metric: float) -> dict[str, dict[str, float]]:
    return {"overall": dict(by_metric)}


RESNET_BN = {"n_blocks": 9, "ngf": 64, "norm": "batch", "use_dropout": True}
PIX2PIX_RESNET = {"model.arch": "resnet", "model.arch_kwargs": RESNET_BN}
BCI_WHOLE = {"data.preprocess": "none", "data.crop_size": 1024}

# ------------------------------------------------------------------ BCI (Liu et al., CVPRW 2022)
BCI_PIX2PIX_RESNET = Row(
    "pix2pix-resnet",
    "pix2pix (resnet generator)",
    "pix2pix",
    {**PIX2PIX_RESNET, **BCI_WHOLE},
    published=_g(psnr=19.328, ssim=0.440),
    note="junyanz pix2pix with ResNet-9 (batch norm, dropout), 100 x L1, whole 1024 px images",
)
BCI_S1 = Row(
    "pix2pix-s1",
    "pix2pix + S1 (ours)",
    "pyramid-pix2pix-s1",
    published=_g(psnr=21.160, ssim=0.477),
)
BCI_COMMON_NOTE = (
    "BCI section 5.1: no preprocessing (whole 1024 px images), batch 2 for pyramid pix2pix; the presets keep "
    "the BCI code's 100 + 100 epochs (the paper's text says 50 + 50); test split HE/test, IHC/test (977 pairs)"
)

BCI_TABLE1 = PaperTable(
    key="bci-table1",
    title="Comparison of PSNR and SSIM of different methods on the BCI dataset",
    citation="Liu et al., BCI: Breast Cancer Immunohistochemical Image Generation through Pyramid Pix2pix, "
    "CVPR workshops 2022, Table 1",
    layout="bci",
    metrics=("psnr", "ssim"),
    columns=(PSNR, SSIM),
    groups=("overall",),
    selection="last",
    selection_text="the last checkpoint (BCI's test.py loads --epoch latest)",
    psnr_convention=PSNR_BCI,
    short_convention=SHORT_BCI,
    crop=CROP_NONE,
    features="none (PSNR and SSIM only)",
    eval_split="test",
    rows=(
        Row(
            "cyclegan",
            "cycleGAN",
            "cyclegan",
            {"data.kind": "unpaired", "data.crop_size": 512, "optim.lr": 2e-4},
            published=_g(psnr=16.203, ssim=0.373),
            note="unpaired HE/train and IHC/train; random 512 crops and lr 2e-4 as BCI section 5.1 says "
            "('other settings consistent with pix2pix')",
            bn_dropout=BN_INSTANCE,
        ),
        Row(
            "pix2pix-unet",
            "pix2pix (unet generator)",
            "pix2pix",
            dict(BCI_WHOLE),
            published=_g(psnr=18.654, ssim=0.419),
            note="U-Net-256 (batch norm, dropout), 100 x L1, whole 1024 px images",
        ),
        BCI_PIX2PIX_RESNET,
        Row(
            "pix2pixhd",
            "pix2pixHD",
            "pix2pix",
            {**PIX2PIX_RESNET, **BCI_WHOLE},
            multiscale=True,
            published=_g(psnr=19.634, ssim=0.471),
            note="pix2pixHD's discriminator (3 scales, LSGAN, feature matching x10) on a ResNet-9 generator: "
            "pix2pixHD's coarse-to-fine generator (global + local enhancer) is not implemented here",
        ),
        BCI_S1,
    ),
    notes=(BCI_COMMON_NOTE,),
)

BCI_TABLE3 = PaperTable(
    key="bci-table3",
    title="Multi-scale analysis on the BCI dataset",
    citation="Liu et al., BCI: Breast Cancer Immunohistochemical Image Generation through Pyramid Pix2pix, "
    "CVPR workshops 2022, Table 3",
    layout="bci",
    metrics=("psnr", "ssim"),
    columns=(PSNR, SSIM),
    groups=("overall",),
    selection="last",
    selection_text="the last checkpoint (BCI's test.py loads --epoch latest)",
    psnr_convention=PSNR_BCI,
    short_convention=SHORT_BCI,
    crop=CROP_NONE,
    features="none (PSNR and SSIM only)",
    eval_split="test",
    rows=(
        Row(
            "pix2pix",
            "pix2pix",
            BCI_PIX2PIX_RESNET.preset,
            BCI_PIX2PIX_RESNET.overrides,
            published=_g(psnr=19.328, ssim=0.440),
            note=BCI_PIX2PIX_RESNET.note + " (the same figures as Table 1's pix2pix (resnet generator))",
        ),
        BCI_S1,
        Row(
            "pix2pix-s1-s2",
            "pix2pix + S1 + S2 (ours)",
            "pyramid-pix2pix",
            {"loss.pyramid_weights": [25.0, 25.0, 25.0]},
            published=_g(psnr=21.033, ssim=0.469),
        ),
        Row(
            "pix2pix-s1-s2-s3",
            "pix2pix + S1 + S2 + S3 (ours)",
            "pyramid-pix2pix",
            published=_g(psnr=21.138, ssim=0.472),
        ),
    ),
    notes=(BCI_COMMON_NOTE,),
)

# ------------------------------------------------------------------ Rehmat et al. (variance-penalised)
VARIANCE_COMMON = {
    "train.batch_size": 8,
    "optim.n_epochs": 50,
    "optim.n_epochs_decay": 50,
    "data.preprocess": "crop",
    "data.crop_size": 256,
}


def _by_class(values: dict[str, tuple[float, float, float]]) -> dict[str, dict[str, float]]:
    return {g: {"psnr": v[0], "ssim": v[1], "fid": v[2]} for g, v in values.items()}


VARIANCE = PaperTable(
    key="variance",
    title="PSNR, SSIM and FID per HER2 class and overall on BCI: pix2pix, pyramid pix2pix, variance-penalised",
    citation="Rehmat et al., Transforming Hematoxylin-Eosin Images into Immunohistochemistry Images: "
    "A Variance-Penalized GAN for Precision Oncology, Tables 1-5 (Tables 1-4: HER2 0, 1+, 2+, 3+; Table 5: "
    "overall)",
    layout="bci",
    metrics=("psnr", "ssim", "fid"),
    columns=(PSNR, SSIM, FID),
    groups=(*HER2_GROUPS, "overall"),
    selection="last",
    selection_text="the last checkpoint (the paper trains 100 epochs and states no selection rule)",
    psnr_convention=PSNR_UNSTATED,
    short_convention=SHORT_BCI + " (paper: not stated)",
    crop="training on random 256 crops (size not stated; 256 is ours); evaluation on whole images",
    features="FID: Inception-v3 (the paper does not name the weights; pytorch-fid's FID network used)",
    eval_split="test",
    common=VARIANCE_COMMON,
    rows=(
        Row(
            "pix2pix",
            "pix2pix",
            "pix2pix",
            {"data.preprocess": "crop", "data.crop_size": 256},
            published=_by_class(
                {
                    "0": (19.6, 0.52, 914.32),
                    "1+": (22.22, 0.47, 605.58),
                    "2+": (20.9, 0.44, 473.84),
                    "3+": (19.2, 0.39, 733.01),
                    "overall": (20.74, 0.44, 472.6),
                }
            ),
            note="the baseline's generator is not stated: the pix2pix preset's U-Net-256",
        ),
        Row(
            "pyramid-pix2pix",
            "pyramid pix2pix",
            "pyramid-pix2pix",
            published=_by_class(
                {
                    "0": (19.2, 0.46, 920.98),
                    "1+": (21.07, 0.44, 642.79),
                    "2+": (20.4, 0.42, 527.4),
                    "3+": (19.4, 0.38, 758.74),
                    "overall": (21.15, 0.43, 516.75),
                }
            ),
        ),
        Row(
            "variance-pyramid",
            "ours (variance-penalised pyramid pix2pix)",
            "variance-pyramid",
            published=_by_class(
                {
                    "0": (20.48, 0.55, 890.46),
                    "1+": (21.65, 0.48, 472.19),
                    "2+": (21.3, 0.46, 395.4),
                    "3+": (19.5, 0.42, 508.38),
                    "overall": (22.16, 0.47, 346.37),
                }
            ),
            note="penalty weight 1.0 (eq. 11 lost its symbols)",
        ),
    ),
    notes=(
        "The tables' captions did not survive the text conversion: Tables 1-4 are read as HER2 0, 1+, 2+, 3+ "
        "(the text's '33% decrease in FID for IHC 3+' matches Table 4: 758.74 -> 508.38).",
        "The paper's FID values (346-921) are far above the usual Inception FID range for BCI; its FID code "
        "is not given, so our FID (pytorch-fid convention) is not on the same scale.",
        "Batch 8, 50 + 50 epochs, cropped inputs for every row (section 5.3); the paper's split is 80:20 "
        "train/validation, ours BCI's own train/test.",
    ),
)

# ------------------------------------------------------------------ AMMFI (Qu et al.) on MIST-HER2
PHV_COLUMNS = tuple(
    Column(f"phv_layer{i}", f"PHV layer{i}", "{:.4f}", higher_is_better=False) for i in range(1, 5)
)
AMMFI_COLUMNS = (
    SSIM,
    *PHV_COLUMNS,
    Column("phv_avg", "PHV avg", "{:.4f}", higher_is_better=False),
    Column("fid", "FID", "{:.1f}", higher_is_better=False),
    Column("kid_asp_x1000", "KID x1000", "{:.1f}", higher_is_better=False),
    Column("lpips", "LPIPS", "{:.4f}", higher_is_better=False),
    PSNR,
)


def _ammfi(*v: float) -> dict[str, dict[str, float]]:
    keys = [c.key for c in AMMFI_COLUMNS]
    return {"overall": dict(zip(keys, v, strict=True))}


MIST_CROP = {"data.preprocess": "crop", "data.crop_size": 512}

ASP_MIST = PaperTable(
    key="asp-mist-her2",
    title="ASP, AMMFI and their competitors on MIST-HER2 (Table I) with AMMFI's ablation (Table II)",
    citation="Qu et al., Advancing H&E-to-IHC Stain Translation in Breast Cancer: A Multi-Magnification and "
    "Attention-Based Approach, Tables I and II",
    layout="mist",
    metrics=("ssim", "phv", "fid", "kid_asp", "lpips", "psnr"),
    columns=AMMFI_COLUMNS,
    groups=("overall",),
    selection="last",
    selection_text="the last checkpoint (ASP's test.py loads --epoch latest; AMMFI states none)",
    psnr_convention=PSNR_BCI + " (ASP's evaluate.py)",
    short_convention=SHORT_BCI,
    crop="training on random 512 crops of the 1024 px tiles; evaluation on whole images",
    features=(
        "FID: Inception-v3 (pytorch-fid network); KID x1000: torchvision Inception-v3 (ASP's kid_score.py, "
        "subsets of 100); PHV: torchvision ResNet-50 layer1-4 (ASP's perceptual.py); LPIPS: AlexNet + v0.1 "
        "heads (the lpips package's default; the paper does not name the backbone)"
    ),
    eval_split="val",
    rows=(
        Row(
            "pix2pix",
            "Pix2pix",
            "pix2pix",
            dict(MIST_CROP),
            published=_ammfi(0.1559, 0.5516, 0.5070, 0.3253, 0.8511, 0.5588, 137.3, 82.9, 0.4722, 14.2550),
            note="the competitors' settings are not given: the pix2pix preset on 512 crops",
        ),
        Row(
            "cyclegan",
            "CycleGAN",
            "cyclegan",
            {"data.kind": "unpaired", **MIST_CROP},
            published=_ammfi(0.1914, 0.5633, 0.6346, 0.4695, 0.8871, 0.6386, 240.3, 311.1, 0.4598, 13.5389),
            note="unpaired trainA / trainB, 512 crops",
            bn_dropout=BN_INSTANCE,
        ),
        Row(
            "cut",
            "CUT",
            "asp",
            {"asp.lambda_asp": 0.0, "asp.lambda_gp": 0.0},
            published=_ammfi(0.1810, 0.5321, 0.4826, 0.3060, 0.8323, 0.5383, 66.8, 19.0, 0.4542, 14.3022),
            note="CUT's objective (GAN + 10 x PatchNCE, FastCUT weights, no identity NCE) on ASP's networks; "
            "CUT's own generator is a ResNet-9 without spectral norm",
            bn_dropout=BN_INSTANCE,
        ),
        Row(
            "pyramid-pix2pix",
            "PyramidP2P",
            "pyramid-pix2pix",
            dict(MIST_CROP),
            published=_ammfi(0.2078, 0.4787, 0.4524, 0.3313, 0.8423, 0.5362, 104.0, 61.8, 0.4493, 14.2033),
            note="512 crops (the BCI recipe trains on whole images)",
        ),
        Row(
            "asp",
            "ASP (Table II: Our Baseline)",
            "asp",
            published=_ammfi(0.2004, 0.4534, 0.4150, 0.2665, 0.8174, 0.4881, 51.4, 12.4, 0.4546, 14.1371),
            bn_dropout=BN_INSTANCE,
        ),
        Row(
            "asp-multi-magnification",
            "w/. multi-magnification (Table II)",
            "asp",
            {"asp.multi_magnification": True},
            published=_ammfi(0.1980, 0.4494, 0.4119, 0.2654, 0.8165, 0.4858, 60.6, 29.7, 0.4465, 14.3046),
            bn_dropout=BN_INSTANCE,
        ),
        Row(
            "ammfi-attention",
            "w/. Attention (Table II)",
            "ammfi",
            {"asp.multi_magnification": False},
            published=_ammfi(0.2187, 0.4527, 0.4148, 0.2867, 0.8183, 0.4918, 61.6, 23.0, 0.4478, 14.2963),
            bn_dropout=BN_INSTANCE + "; AMMFI's attention module: docs/training.md, ASP and AMMFI",
        ),
        Row(
            "ammfi",
            "Ours (AMMFI)",
            "ammfi",
            published=_ammfi(0.2153, 0.4482, 0.4094, 0.2639, 0.8157, 0.4843, 51.4, 8.6, 0.4432, 14.3711),
            note="multi-magnification views by OpenCV resampling (the paper: BSRGAN)",
            bn_dropout=BN_INSTANCE + "; AMMFI's attention module: docs/training.md, ASP and AMMFI",
        ),
    ),
    notes=(
        "MIST-HER2: trainA/trainB (4642 pairs) for training, valA/valB (1000 pairs, MIST's test set) for the "
        "figures.",
        "Table I's KID is read as x1000 (ASP's convention: 12.4 = 0.0124).",
    ),
)

# ------------------------------------------------------------------ TDKstain (Peng et al., MICCAI 2024)
TDK_COLUMNS = (
    SSIM,
    FID,
    Column("dists", "DISTS", "{:.4f}", higher_is_better=False),
    Column("nuclei_count_error_mae", "nuclei count |err|", "{:.2f}", higher_is_better=False),
    Column("membrane_intensity_error", "membrane intensity err", "{:.4f}", higher_is_better=False),
)


def _tdk(ssim: float, fid: float, dists: float) -> dict[str, dict[str, float]]:
    return _g(ssim=ssim, fid=fid, dists=dists)


TDKSTAIN = PaperTable(
    key="tdkstain",
    title="TDKstain against the state of the art, with its ablation (SSIM, FID, DISTS)",
    citation="Peng et al., Advancing H&E-to-IHC Virtual Staining with Task-Specific Domain Knowledge for "
    "HER2 Scoring, MICCAI 2024, Table 1 (the error analysis of Fig. 3 is a figure: no numbers to compare)",
    layout="bci",
    metrics=("ssim", "fid", "dists", "nuclei", "membrane"),
    columns=TDK_COLUMNS,
    groups=("overall",),
    selection="last",
    selection_text="the last checkpoint (balball/TDKstain's test.py loads --epoch latest)",
    psnr_convention="SSIM: " + PSNR_BCI,
    short_convention="SSIM per-image mean, range 255, RGB uint8",
    crop=CROP_NONE,
    features=(
        "FID: Inception-v3 (pytorch-fid network); DISTS: VGG16 + DISTS alpha/beta; nuclei count: the core's "
        "segmenter (Cellpose nuclei, or classical); membrane: DAB-only HSV saturation thresholds 0.10-0.50"
    ),
    eval_split="test",
    rows=(
        Row(
            "cyclegan",
            "CycleGAN",
            "cyclegan",
            {"data.kind": "unpaired"},
            published=_tdk(0.3361, 40.91, 0.2121),
            note="unpaired HE/train and IHC/train",
            bn_dropout=BN_INSTANCE,
        ),
        Row("pix2pix", "Pix2pix", "pix2pix", dict(BCI_WHOLE), published=_tdk(0.3452, 47.77, 0.1920)),
        Row(
            "pix2pixhd",
            "Pix2pixHD",
            "pix2pix",
            {**PIX2PIX_RESNET, **BCI_WHOLE},
            multiscale=True,
            published=_tdk(0.3387, 41.77, 0.1910),
            note="pix2pixHD's discriminator on a ResNet-9 (its coarse-to-fine generator is not implemented)",
        ),
        Row("pyramid-pix2pix", "Pyramidpix2pix", "pyramid-pix2pix", published=_tdk(0.3477, 49.32, 0.1934)),
        Row("asp", "ASP", "asp", published=_tdk(0.3256, 64.04, 0.2200), bn_dropout=BN_INSTANCE),
        Row(
            "tdkstain-no-knowledge",
            "w/o L_nuclei & L_membrane",
            "tdkstain",
            {"tdkstain.lambda_nuclei": 0.0, "tdkstain.lambda_mask": 0.0},
            published=_tdk(0.3423, 44.01, 0.1930),
            bn_dropout=BN_INSTANCE,
        ),
        Row(
            "tdkstain-no-nuclei",
            "w/o L_nuclei",
            "tdkstain",
            {"tdkstain.lambda_nuclei": 0.0},
            published=_tdk(0.3448, 37.77, 0.1798),
            bn_dropout=BN_INSTANCE,
        ),
        Row(
            "tdkstain-no-membrane",
            "w/o L_membrane",
            "tdkstain",
            {"tdkstain.lambda_mask": 0.0},
            published=_tdk(0.3416, 37.40, 0.1830),
            bn_dropout=BN_INSTANCE,
        ),
        Row(
            "tdkstain",
            "ours (TDKstain)",
            "tdkstain",
            published=_tdk(0.3424, 33.92, 0.1744),
            bn_dropout=BN_INSTANCE,
        ),
    ),
    notes=(
        "The paper's data (RegH2I: 1992 training, 600 test pairs of 1024 px, 4B5 antibody) is not public; "
        "give it, or BCI, in BCI's layout (HE/train, IHC/train, HE/test, IHC/test).",
        "The competitors' settings are not given in the paper: each runs its own preset.",
        "Cellpose 3's single nuclei network stands in for the reference's Cellpose 2.2 net_avg ensemble.",
    ),
)

# ------------------------------------------------------------------ CycleGAN for Ki-67 (Xu et al. 2020)
KI67_COLUMNS = (
    Column("ratio_train_real", "train: real Ki-67 ratio", "{:.4f}"),
    Column("ratio_train_synthetic", "train: synthetic Ki-67 ratio", "{:.4f}"),
    Column("ratio_eval_real", "evaluation: real Ki-67 ratio", "{:.4f}"),
    Column("ratio_eval_synthetic", "evaluation: synthetic Ki-67 ratio", "{:.4f}"),
)
CYCLEGAN_KI67_COMMON = {"optim.n_epochs": 100, "optim.n_epochs_decay": 0}

CYCLEGAN_KI67 = PaperTable(
    key="cyclegan-ki67",
    title="Ratio of Ki-67-positive cells to all cells in real and synthetic Ki-67 images",
    citation="Xu et al., Effective Immunohistochemistry Pathology Microscopy Image Generation Using CycleGAN, "
    "Front. Mol. Biosci. 2020, Table 3 (raw CycleGAN appears only in Fig. 11: no numbers)",
    layout="ki67",
    metrics=("ki67_ratio",),
    columns=KI67_COLUMNS,
    groups=("overall",),
    selection="best_ki67_ratio",
    selection_text=(
        "the best of the per-epoch checkpoints on the validation set (the paper saves one per epoch and keeps "
        "the best; it does not name the criterion: ours is the smallest |ratio(real) - ratio(synthetic)| over "
        "HE/val and Ki67/val)"
    ),
    short_convention="ratio: positive / all nuclei pooled per set (core Ki-67 index)",
    psnr_convention="no PSNR: positive cells / all cells pooled over each set (Table 3), counted by the core's "
    "Ki-67 labelling index (stain.markers.ki67_estimate: a nucleus is positive at mean DAB OD >= the weak "
    "cut-off 0.2)",
    crop="training on random 224 crops; evaluation on whole images",
    features="nuclei: the core's segmenter (Cellpose nuclei, or the classical method; named in the table)",
    eval_split="test",
    common=CYCLEGAN_KI67_COMMON,
    rows=(
        Row(
            "cyclegan",
            "CycleGAN only (Fig. 11)",
            "cyclegan",
            published={},
            note="the paper shows raw CycleGAN only as an image (Fig. 11)",
            bn_dropout=BN_INSTANCE,
        ),
        Row(
            "cyclegan-mil",
            "ours (MIL-conditional CycleGAN)",
            "cyclegan",
            {"cyclegan.class_channel": True},
            published={
                "overall": {
                    "ratio_train_real": 0.3744,
                    "ratio_train_synthetic": 0.3850,
                    "ratio_eval_real": 0.3046,
                    "ratio_eval_synthetic": 0.2771,
                }
            },
            note="the class plane from MIL tumour classifiers trained on mil/HE and mil/Ki67 (ResNet-34, top-1 "
            "per bag); where the class enters the generator is ours (docs/training.md)",
            bn_dropout=BN_INSTANCE,
        ),
    ),
    notes=(
        "The paper trains 100 epochs at lr 1e-4 (the cyclegan preset's lr; here 100 constant epochs, no "
        "decay) and saves a checkpoint per epoch; all are kept for the selection.",
        "Its data (Ki-67 and H&E slides, 34121 / 33293 training tiles of 224 px) is not public.",
    ),
)

TABLES: dict[str, PaperTable] = {
    t.key: t for t in (BCI_TABLE1, BCI_TABLE3, ASP_MIST, TDKSTAIN, VARIANCE, CYCLEGAN_KI67)
}
