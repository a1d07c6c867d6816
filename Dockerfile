# DeadNet-Caffe on a GPU host: Debian bookworm, Debian's CUDA 11.8 (non-free), the patched
# Caffe built by the same script as on a CPU machine with --cuda (sm_60 .. sm_90 + PTX, cuDNN
# off: docs/gpu.md says why). Build it with `make docker` (docker or podman; it provides and
# pins the base image) and run it on a host with the NVIDIA driver and container toolkit:
#
#   docker run --gpus all --rm -v "$PWD/runs:/opt/deadnet/runs" deadnet-caffe:gpu \
#       deadnet train --dataset runs/datasets/A --solver prototxt/dataset_a/solver.prototxt \
#                     --run runs/train-a --gpu 0
#
# Stages: build (compilers, CUDA development parts, the Caffe build, the virtualenv), runtime
# (the default: Python, the toolkit and only the Debian packages that ldd finds the built
# libraries linking), selftest (`make docker-check`: runs docker/selftest.sh in the runtime).
ARG BASE=debian:bookworm

# ---- build ---------------------------------------------------------------------------------
FROM ${BASE} AS build
ENV DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8 DEADNET_CACHE=/opt/deadnet-caffe \
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt
# CA certificates that the building machine added locally (docker/image.sh copies them from
# /usr/local/share/ca-certificates, e.g. a TLS-intercepting proxy's): trusted by this stage's
# downloads only, not by the runtime image.
COPY docker/ca-certificates/ /usr/local/share/ca-certificates/
RUN apt-get update \
 && apt-get install -y -qq --no-install-recommends python3 python3-venv python3-dev make \
        ca-certificates \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/deadnet
# The Python dependencies at their tested pins (constraints.txt; and pytest, for tests/gpu)
# before the sources, so that a source change does not redo the Caffe build, whose cache key
# includes numpy's version.
COPY pyproject.toml constraints.txt ./
RUN python3 -m venv .venv \
 && .venv/bin/pip install -q --no-cache-dir -c constraints.txt $(python3 -c 'import tomllib; \
        p = tomllib.load(open("pyproject.toml", "rb"))["project"]; \
        print(" ".join(p["dependencies"] \
              + [d for d in p["optional-dependencies"]["dev"] if d.startswith("pytest")]))')
# build.sh's system packages for --cuda, installed in a layer of their own so that a change of
# build.sh or the patches recompiles Caffe without downloading the toolkit again (build.sh
# installs whatever this list lacks).
COPY third_party/caffe/apt-sources.sh third_party/caffe/
RUN third_party/caffe/apt-sources.sh non-free \
 && third_party/caffe/apt-sources.sh deb-src \
 && apt-get update \
 && apt-get install -y -qq --no-install-recommends build-essential cmake dpkg-dev \
        libboost-dev libboost-filesystem-dev libboost-system-dev libboost-thread-dev \
        libboost-python-dev libgflags-dev libgoogle-glog-dev libhdf5-dev liblmdb-dev \
        libsnappy-dev libopenblas-dev libopencv-dev libprotobuf-dev protobuf-compiler \
        nvidia-cuda-toolkit g++-11 > /dev/null \
 && rm -rf /var/cache/apt/archives/*.deb
COPY third_party/caffe third_party/caffe
RUN third_party/caffe/build.sh --venv .venv --cuda \
 && rm -rf /var/lib/apt/lists/* "$DEADNET_CACHE"/src-*
# What the built libraries, the caffe tool and the wheels' extension modules link at run
# time, as the Debian packages that own those files (docker/runtime-packages.sh).
COPY docker/runtime-packages.sh docker/
RUN docker/runtime-packages.sh "$DEADNET_CACHE" .venv > /opt/runtime-packages.txt \
 && cat /opt/runtime-packages.txt \
 && install -D "$(readlink -f "$(command -v cuobjdump)")" /opt/tools/cuobjdump
COPY . .
RUN .venv/bin/pip install -q --no-cache-dir --no-deps -e . \
 && rm -rf docker/ca-certificates

# ---- runtime (default target) ----------------------------------------------------------------
FROM ${BASE} AS runtime
ARG BASE
LABEL org.opencontainers.image.title="DeadNet-Caffe (CUDA 11.8)" \
      org.opencontainers.image.base.name="${BASE}"
ENV DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8 DEADNET_CACHE=/opt/deadnet-caffe
COPY third_party/caffe/apt-sources.sh /tmp/
COPY --from=build /opt/runtime-packages.txt /tmp/
RUN /tmp/apt-sources.sh non-free \
 && apt-get update \
 && apt-get install -y -qq --no-install-recommends python3 ca-certificates \
        $(cat /tmp/runtime-packages.txt) \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb /tmp/*
COPY --from=build /opt/deadnet-caffe /opt/deadnet-caffe
COPY --from=build /opt/deadnet /opt/deadnet
WORKDIR /opt/deadnet
ENV PATH=/opt/deadnet/.venv/bin:$PATH
CMD ["deadnet", "--help"]

# ---- selftest (make docker-check) ------------------------------------------------------------
FROM runtime AS selftest
COPY --from=build /opt/tools/cuobjdump /usr/local/bin/cuobjdump
RUN bash -o pipefail -c 'docker/selftest.sh 2>&1 | tee /opt/selftest.log'

# ---- the default target is the lean runtime image ----------------------------------------------
FROM runtime
