"""Every number taken from the paper or from the published prototxts, in one place.

"Paper" is shared/paper/deadnet-paper.txt (DeadNet, sections and equations as cited).
"Published" is the released train/val/solver prototxts, as listed in
shared/reference/released-settings.md. Where the two disagree, the published value is the
default and the paper's variant is kept beside it (``*_PAPER``); docs/FAITHFULNESS.md lists
every row with the test that checks it. The prototxt files repeat the net's numbers, each
with a comment, and tests/test_prototxt.py checks them against this module.
"""

from __future__ import annotations

# --- Microscope and experiment (paper section 2.1) ----------------------------------------
FRAME_WIDTH_PX = 1344  # Hamamatsu ORCA-ER, 1344 x 1024 px (section 2.1, 2.2)
FRAME_HEIGHT_PX = 1024
PIXEL_SIZE_UM = 6.45 / 20.0  # 6.45 um camera pixel, 20x objective -> 0.3225 um at the sample
FRAME_INTERVAL_MIN = 8.0  # "every 8 min" (section 2.1)
TIMELAPSE_HOURS = (18.0, 24.0)  # "18-24 hr timelapse" (section 2.2)
DOSE_RANGE_S = (0.0, 200.0)  # continuous 395 nm light, 0-200 s (section 2.1)
DATASET_B_DOSE_RANGE_S = (0.0, 80.0)  # "images with 0-80s UV exposure" (section 2.2)
POSITIONS_PER_WELL = (3, 4)  # 3-4 stage positions per well (section 2.1)
CELL_TYPE = "U2OS"  # "U2OS cells were cultured in McCoy's 5A media ..." (section 2.1)
OBJECTIVE = "20x/0.75 Plan Apo Ph2 DM"  # "a 20x/0.75 Plan Apo Ph2 DM objective lens" (2.1)
PUBLISHED_REPO = "https://github.com/HMS-IDAC/DeadNet"  # the released prototxts (reference/)

# --- Crops (sections 2.2, 2.3, 2.4) -------------------------------------------------------
CROP_PX = 256  # "256x256 px" crops (sections 2.2, 2.3 step c)
CROP_STRIDE_PX = 128  # "Overlapping crops were taken with a stride of 128px" (2.3 step c)
CROPS_PER_FULL_IMAGE = 54  # "54 annotated crops per full annotated image" (2.2); see FAITHFULNESS
NET_INPUT_PX = 220  # "The input to our network was a 220x220 px crop" (2.4); published crop_size
SEQUENCE_FRAMES = 10  # Data Set B: "10 consecutive frames" per annotated crop (2.2)

# --- Augmentation (section 2.3) -----------------------------------------------------------
TPS_GRID_PX = 128  # control points "on a grid at 128px intervals" (2.3 step w)
TPS_DISPLACEMENT_SIGMA_PX = 10.0  # N(0, sigma^2 I), sigma_disp = 10 px (2.3 step w)
N_ROTATIONS_MIRRORS = 8  # "All 8 unique combinations" (2.3 step r)
BLUR_SIGMA_RANGE_PX = (1.1, 1.5)  # sigma_blur ~ U(1.1, 1.5) px (2.3 step b)
NOISE_SIGMA = 0.5  # additive Gaussian noise after variance normalisation (2.3 step n)
# Multiplicities (2.3, last paragraph):
AUG_A = {"w": 3, "r": 8, "b": 2, "c": 54}  # 3 x 8 x 2 x 54 = 2592 per full image
AUG_B = {"r": 8, "b": 3, "t": 10, "n": 3}  # 8 x 3 x 10 x 3 = 720 per annotated crop
AUG_A_TOTAL = 2592
AUG_B_TOTAL = 720

# --- Storage and input transform (published train/val nets) -------------------------------
DATA_MEAN_VALUE = 32767  # transform_param mean_value (published)
DATA_SCALE = 0.00025  # transform_param scale (published)
# Inferred from the two above (released-settings.md): stored v = 32767 + 4000 z, so that
# (v - mean) * scale = z exactly. 4000 = 1 / 0.00025.
DATUM_Z_SCALE = 4000.0
BATCH_SIZE = 20  # batch_size, train and val (published; paper section 2.4)
MIRROR_TRAIN_B = True  # only Data Set B's train net sets mirror: true (published)
LABELS = {0: "healthy", 1: "sick"}  # this project's label convention (dataset card)

# --- Net (Table 1 and the published nets) -------------------------------------------------
CONV_LAYERS = (
    # name, num_output, kernel, pad (published; Table 1)
    ("conv_d1_1", 16, 9, 0),
    ("conv_d1_2", 16, 3, 1),
    ("conv_d2_1", 32, 3, 1),
    ("conv_d2_2", 32, 3, 1),
    ("conv_d3_1", 64, 3, 1),
    ("conv_d3_2", 64, 3, 1),
    ("conv_d4_1", 128, 3, 1),
    ("conv_d4_2", 128, 3, 1),
)
POOL_LAYERS = ("pool_d2_0", "pool_d3_0", "pool_d4_0", "pool_d5_0")  # kernel 2, stride 2
FC_LAYERS = (("fc1", 512), ("fc2", 512), ("score", 2))  # published; Table 1
DROPOUT_RATIO = 0.5  # after fc1 and fc2, TRAIN only (published; paper 2.4)
BN_MOVING_AVERAGE_FRACTION = 0.95  # published BatchNorm param
INPUT_CHANNELS = 1  # Table 1: 220x220x1 (grey phase-contrast crops)
POOL_KERNEL = 2  # Table 1 "2x2x1, 2"; published
POOL_STRIDE = 2
WEIGHT_FILLER = "xavier"  # "Xavier initialization scheme [18]" (2.4); published
PARAM_LR_MULT = (1, 2)  # weights, bias (published conv layers; used for fc as well)
PARAM_DECAY_MULT = (1, 0)
# Table 1's row names for the published layer names (conv_dX_Y = ConvX.Y, pool_dX_0 = MaxPool.X-1)
TABLE1_NAMES = {
    **{name: f"Conv{name[6]}.{name[8]}" for name, *_ in CONV_LAYERS},
    **{name: f"MaxPool.{i}" for i, name in enumerate(POOL_LAYERS, start=1)},
    "fc1": "fc.1",
    "fc2": "fc.2",
    "score": "score",
}
FCN_STRIDE_PX = POOL_STRIDE**4  # one fully-convolutional window every 2^4 = 16 px (4 pools)
# Blob sides for a 220 px input (measured with BVLC Caffe, released-settings.md):
BLOB_SIDES_PUBLISHED = (212, 106, 53, 27, 14)  # Caffe's default CEIL pooling
BLOB_SIDES_TABLE1 = (212, 106, 53, 26, 13)  # Table 1: needs round_mode FLOOR

# --- Solver (published solver.prototxt; paper section 2.4) --------------------------------
SOLVER_TYPE = "Nesterov"
BASE_LR = 0.0003
LR_POLICY = "inv"
LR_GAMMA = 1e-5
LR_POWER = 0.75
MOMENTUM = 0.9
WEIGHT_DECAY_A = 0.0001  # published Data Set A
WEIGHT_DECAY_B = 0.00001  # published Data Set B
WEIGHT_DECAY_PAPER = 0.001  # paper section 2.4 text (disagrees with the published files)
MAX_ITER = 1_000_000  # published; the paper says "approx. 500k iterations" (2.4)
MAX_ITER_PAPER = 500_000
TEST_INTERVAL = 2000
TEST_ITER_A = 20
TEST_ITER_B = 5
DISPLAY = 200
SNAPSHOT = 20000

# --- Statistics (section 2.5) -------------------------------------------------------------
BOOTSTRAP_VIRTUAL_BATCHES = 100  # "100 virtual batches"
BOOTSTRAP_PER_CLASS = 10  # "10 healthy and 10 sick cells"
BOOTSTRAP_RESAMPLES = 100_000  # "1x10^5 bootstrap samples"
CONFIDENCE_LEVEL = 0.95  # "95% confidence intervals", BCa

# --- Annotation concordance (sections 2.2, 3.1) -------------------------------------------
OVERLAP_EVERY_NTH = 5  # "every 5th image ... already scored by another annotator" (2.2)
VOTE_LABELS = ("healthy", "sick", "unsure")  # "Healthy", "Sick" or "Unsure" (2.2)
PAPER_OVERLAP_COUNT = 263  # section 3.1
PAPER_DISAGREE_COUNT = 49  # section 3.1 -> 18.6%
PAPER_UNEXPOSED_HEALTHY = (230, 256)  # experts: 230/256 = 89.8% healthy (3.1)
PAPER_UNEXPOSED_NET = 0.888  # the net's fraction healthy on unexposed crops (3.1)

# --- Reported results (section 3.1, Figure 3) ---------------------------------------------
PAPER_ACCURACY_A = 0.945
PAPER_ACCURACY_B = 0.757  # text; Figure 3's table says 0.752
PAPER_ACCURACY_B_FIGURE3 = 0.752

# --- Visualisation (section 2.6) ----------------------------------------------------------
GRADCAM_LAYER = "conv_d4_2"  # "L = Conv4.2" (2.6)
CLASSMODEL_EPSILON = 10.0  # eq. 4 step size
CLASSMODEL_LAMBDA1 = 0.01  # eq. 4 L2 penalty
CLASSMODEL_LAMBDA2 = 0.001  # eq. 4 Laplacian smoothness
CLASSMODEL_ITERATIONS = 500
