#!/bin/bash
# Issue 13's next from-scratch joint run (`--member-loss expected`, the default) on a lent GPU.
#
# A call of the `run` tool carries at most 64 MiB, the working tree included, so the training images
# travel in three pieces, one per call, and the tree travels trimmed. The run reads only
# data_batch_1..5 (`val` is held out of `train`); `test` is scored afterwards on the CPU, and a test_batch
# of blank images stands in for it on the device (the loader checks that the test set is whole).
#
#   here, once (about 10 min of one core):   ROUTING_ENV_DATA=.data training/device/joint-scratch.sh pack
#   here, before the calls (undo: `git reset -q`, then restore .git/info/exclude):
#       git rm -r -q --cached training/cifar10-* benchmarks/results docs pretrained/*/tb pretrained/*/*.npz
#       and add those paths to .git/info/exclude, so that they do not travel as untracked files
#   device calls, back to back (a warm device keeps /tmp only until it is released, 30 s idle):
#     1. carry [".gpu/train-aa", ".gpu/whl"]:  bash training/device/joint-scratch.sh receive
#     2. carry [".gpu/train-ab"]:              bash training/device/joint-scratch.sh receive
#     3. carry [".gpu/train-ac"], timeout_s 590: bash training/device/joint-scratch.sh run
#   If the time limit stopped the run before its last epoch, copy the fetched $OUT/joint to .gpu/joint
#   and go on, once the pieces are on the device again, with carry [".gpu/train-ac", ".gpu/joint"]:
#       bash training/device/joint-scratch.sh resume
#
# Afterwards, on the CPU: "Next, when a GPU is lent" in training/README.md (score, package, sweep).
set -euo pipefail
OUT=${OUT:-/tmp/out}
RUN=(--from-scratch --backbone cifar10-resnet-cascade --lam 0.03 --epochs 100 --dense-epochs 33 --device cuda)

receive() {  # whatever this call carried, into /tmp/d
    mkdir -p /tmp/d
    for path in .gpu/train-* .gpu/whl; do [ -e "$path" ] && cp -r "$path" /tmp/d/; done
    ls -l /tmp/d
}

prepare() {  # the device's missing packages and the training images
    receive
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site /tmp/d/whl/*.whl
    mkdir -p /tmp/data
    cat /tmp/d/train-* | xz -dc | tar -xf - -C /tmp/data
    python3 -c "import pickle, numpy as np; pickle.dump({'data': np.zeros((10000, 3072), np.uint8), 'labels': [0] * 10000},
        open('/tmp/data/cifar-10-batches-py/test_batch', 'wb'))"  # the loader checks test too: 10,000 blank images
    nvidia-smi -L || true; nproc; lscpu | grep "Model name"; python3 -c "import torch; print('torch', torch.__version__)"
}

joint() {  # the run; its log beside its folder under $OUT, both fetched after the call
    PYTHONUNBUFFERED=1 PYTHONPATH=/tmp/site:$PWD ROUTING_ENV_DATA=/tmp/data OMP_NUM_THREADS=4 \
        python3 -m routing_env joint "${RUN[@]}" --time-limit 8.9 --out "$OUT/joint" "$@" >> "$OUT/joint.log" 2>&1 || true
    tail -n 4 "$OUT/joint.log"
}

case "${1:-}" in
pack)
    : "${ROUTING_ENV_DATA:?set ROUTING_ENV_DATA to the folder that holds cifar-10-batches-py}"
    mkdir -p .gpu/whl
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .gpu/whl \
        $(grep -iE '^(gymnasium|farama-notifications|stable_baselines3|sb3_contrib)==' constraints.txt)  # the device lacks these
    tar -C "$ROUTING_ENV_DATA" -cf - cifar-10-batches-py/batches.meta $(printf 'cifar-10-batches-py/data_batch_%d ' 1 2 3 4 5) \
        | xz -T1 --delta=dist=1 --lzma2=preset=9e > .gpu/train.tar.xz
    split -n 3 -a 2 .gpu/train.tar.xz .gpu/train-
    rm .gpu/train.tar.xz
    ls -l .gpu/train-* .gpu/whl
    ;;
receive) receive ;;
run) prepare; joint ;;
resume) prepare; cp -r .gpu/joint "$OUT/joint"; joint --resume ;;
*) echo "usage: $0 pack|receive|run|resume" >&2; exit 2 ;;
esac
