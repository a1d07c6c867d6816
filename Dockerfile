# DeadNet-Caffe on a GPU host: Debian bookworm + Debian's CUDA 11.8 toolkit (non-free), and the
# same build script as on a CPU machine, with --cuda (Pascal sm_60 .. Hopper sm_90, cuDNN off).
#
#   docker build -t deadnet-caffe:gpu .
#   docker run --gpus all --rm -v "$PWD/runs:/opt/deadnet/runs" deadnet-caffe:gpu \
#       deadnet train --dataset runs/datasets/A --solver prototxt/dataset_a/solver.prototxt \
#                     --run runs/train-a --gpu 0
#
# The host needs the NVIDIA driver and the NVIDIA container toolkit; the image brings the rest.
FROM debian:bookworm

ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv python3-dev make git ca-certificates \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/deadnet
COPY . .
RUN make setup CAFFE_FLAGS=--cuda PYTHON=python3 \
 && rm -rf /var/lib/apt/lists/*

ENV PATH=/opt/deadnet/.venv/bin:$PATH
CMD ["deadnet", "--help"]
