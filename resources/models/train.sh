#!/usr/bin/env bash
# How the bundled default models are made: our own CLI on FER2013's train split (the test split is never
# seen; a seeded 22 % of train is the validation set). Run from the repository root with ../shared/data.
# The ProtoPNet and the PatchSAE start from the CNN baseline's trained backbone, so all three share a trunk;
# those two are independent of each other and train side by side.
set -euo pipefail
DATA=${DATA:-../shared/data/images/fer2013}
RUNS=${RUNS:-runs}
V=.venv/bin/vidxai
# CNN=resources/models/cnn reuses the shipped baseline as the trunk instead of training it again.
CNN=${CNN:-$RUNS/cnn/model}

[ -f "$CNN/model.json" ] || \
$V train "$DATA" --arch cnn --backbone small --labels fer2013 --epochs 12 --batch-size 64 \
   --set cnn_lr_step=8 --out "$RUNS/cnn"

$V train "$DATA" --arch protopnet --backbone small --labels fer2013 --epochs 6 --batch-size 64 \
   --set backbone_checkpoint="$CNN" --set warmup_epochs=2 --set lr_step=3 \
   --set push_every=0 --set last_layer_epochs=3 --out "$RUNS/protopnet" &
$V train "$DATA" --arch patchsae --backbone small --labels fer2013 --batch-size 64 \
   --set backbone_checkpoint="$CNN" --set sae_epochs=3 --set head_epochs=3 \
   --out "$RUNS/patchsae" &
wait

# Issue 12: re-push the ProtoPNet onto on-face, non-featureless patches (landmark-hull test; featureless
# inputs — flat, blurred, noise — carry no class signal) and retrain its last layer on cached similarities
# (docs/EXPLANATIONS.md §4–§5). Starts from the ProtoPNet above; ~20 min on 2 CPU cores.
PROTO=${PROTO:-$RUNS/protopnet/model}
$V train "$DATA" --arch protopnet --backbone small --labels fer2013 --epochs 0 --batch-size 64 \
   --set init_checkpoint="$PROTO" --set last_layer_epochs=3 --set last_layer_cached=true \
   --out "$RUNS/protopnet_onface"

# Optional, OCC_FINETUNE=1 (issue 12; NOT run for the shipped model — no joint epoch fitted in session 5's
# CPU budget): one joint epoch with random mean-fill patch occlusion (occlusion_augment, the occlusion
# test's fill; docs/EXPLANATIONS.md §9), then the on-face re-push and cached last-layer epochs as above.
if [ "${OCC_FINETUNE:-0}" = 1 ]; then
$V train "$DATA" --arch protopnet --backbone small --labels fer2013 --epochs 1 --batch-size 64 \
   --set init_checkpoint="$RUNS/protopnet_onface/model" --set warmup_epochs=0 --set lr_step=0 \
   --set occlusion_augment=0.3 --set last_layer_epochs=3 --set last_layer_cached=true \
   --out "$RUNS/protopnet_occ"
fi

# Issue 16 (METHODS §7): the AU-guided CNN beside the unguided one. The full protocol is the CNN command above
# plus --au-guidance 4 (AU_FULL=1; 12 epochs from scratch). It did not fit session 7's CPU budget (2 shared
# cores, nice 19), so what was run instead: both arms fine-tuned from the shipped CNN for the same single epoch
# at the shipped run's final learning rate (1e-4, constant), same seed, data order and augmentation, λ = 4
# against λ = 0; then both evaluated on the whole test split and, with CAM-COS, on the 700-image subset.
# The table: .venv/bin/python resources/models/report.py --au-guidance resources/models/cnn <both arms>.
SHIPPED_CNN=${SHIPPED_CNN:-resources/models/cnn}
if [ "${AU_FULL:-0}" = 1 ]; then
$V train "$DATA" --arch cnn --backbone small --labels fer2013 --epochs 12 --batch-size 64 \
   --set cnn_lr_step=8 --au-guidance 4 --out "$RUNS/cnn-au"
AU_ARMS="$RUNS/cnn/model $RUNS/cnn-au/model"; AU_SHIP="$RUNS/cnn-au/model"
else
for LAM in 0 4; do
OMP_NUM_THREADS=1 $V train "$DATA" --arch cnn --backbone small --labels fer2013 --epochs 1 --batch-size 64 \
   --set init_checkpoint="$SHIPPED_CNN" --set lr_cnn=0.0001 --set cnn_lr_step=0 --au-guidance $LAM \
   --out "$RUNS/ft_au$LAM" &
done
wait
AU_ARMS="$SHIPPED_CNN $RUNS/ft_au0/model $RUNS/ft_au4/model"; AU_SHIP="$RUNS/ft_au4/model"
fi
for M in $AU_ARMS; do
$V evaluate "$DATA" --model "$M" --record
$V evaluate "$DATA" --model "$M" --limit 700 --seed 0 --cam-cos --record
done
# The guided arm ships as resources/models/cnn-au (its test accuracy was within 1.5 points of the shipped CNN's).
# Its heatmaps' faithfulness is measured but NOT recorded in its model.json (bench/results/au_guidance/): with
# the record, engine.resources.measured_choice would make cnn-au the app's default model (README, issue 16).
# (--occlusion --record would also rewrite the 700-subset record without CAM-COS: record CAM-COS after it.)
$V evaluate "$DATA" --model "$AU_SHIP" --limit 700 --seed 0 --occlusion --out "$RUNS/cnn-au-occlusion"

# Issue 16 (METHODS §8): the default landmark model, one-frame "sequences" of FER2013's still images (68 dlib
# landmarks of each training crop, eye-normalised), 3 epochs (session 7's CPU budget; the default is 20;
# validation accuracy 0.447, 0.408, 0.451 after epochs 1-3), then its IG ranking and the pruning ladder 68 → 34 → 17 → 8
# (each size retrained with the same settings) on the whole test split; docs/landmark_ranking_fer2013_shipped.png
# is the ladder's ranking.png.
$V train "$DATA" --arch landmark-lstm --epochs 3 --out "$RUNS/landmark"
$V evaluate "$DATA" --model "$RUNS/landmark/model" --landmark-ranking --record --out "$RUNS/landmark-ladder"

# Issue 15: the TimeSformer (hybrid: its patch tokens are the CNN trunk's feature map; divided space-time
# attention, T = 8, dim 192, depth 4, 3 heads — the default shape) on all of FER2013's train split, each still
# face a one-frame clip; the trunk starts from the shipped CNN. 6 epochs, 32 min on 2 CPU cores (session 8);
# validation accuracy 0.620 0.635 0.623 0.615 0.650 0.641. Its temporal attention stays the zero-initialised
# identity (no video here). Then the whole test split, and the 700-subset with every method's occlusion Δ
# (recorded: measured_choice keeps the PatchSAE, whose default map is more faithful).
if [ "${TSF:-0}" = 1 ]; then
$V train "$DATA" --arch timesformer --labels fer2013 --epochs 6 --batch-size 64 --set lr_cnn=0.0005 \
   --set cnn_lr_step=4 --set backbone_checkpoint="${SHIPPED_CNN}" --out "$RUNS/tsf_full"
$V evaluate "$DATA" --model "$RUNS/tsf_full/model" --record
$V evaluate "$DATA" --model "$RUNS/tsf_full/model" --limit 700 --seed 0 --occlusion --record
fi
