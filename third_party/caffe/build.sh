#!/usr/bin/env bash
# Build BVLC Caffe 1.0 (Debian's source package, patched) and link it into a virtualenv.
#
#   third_party/caffe/build.sh [--venv DIR] [--cuda] [--blas mkl|openblas] [--no-link] [--jobs N]
#
# CPU_ONLY by default; --cuda builds the GPU variant (CUDA 11.8 from Debian's
# nvidia-cuda-toolkit, Pascal sm_60 through Hopper sm_90, cuDNN off, NCCL on where found).
# The build is cached under $DEADNET_CACHE (default ~/.cache/deadnet-caffe), keyed by the
# source version, the patch files, this script and the build options, so a rerun with an
# unchanged key only relinks the virtualenv.
#
# BLAS: Intel oneMKL (the PyPI wheel whose version SOURCE pins, installed into the cache) on
# x86-64, through its CBLAS interface with GNU OpenMP threading, the same OpenMP runtime as
# the project's layer patches; Debian's OpenBLAS with --blas openblas and on other CPUs.
# MKL runs this net's convolution GEMMs about 1.4 times faster than OpenBLAS 0.3.21 here
# (docs/cpu-speed.md); it is one of the three BLAS libraries Caffe supports. Libcaffe is
# compiled against OpenBLAS's cblas.h either way (the CBLAS interface is a standard) and
# finds MKL through its RUNPATH. Exit status 2 with one sentence on any problem
# that the user has to fix.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
venv=.venv
cuda=0
link=1
blas=auto
jobs=$(nproc 2>/dev/null || echo 2)
while [ $# -gt 0 ]; do
  case "$1" in
    --venv) venv=$2; shift 2 ;;
    --cuda) cuda=1; shift ;;
    --blas) blas=$2; shift 2 ;;
    --no-link) link=0; shift ;;
    --jobs) jobs=$2; shift 2 ;;
    *) echo "build.sh: unknown option '$1' (see the header of $0)." >&2; exit 2 ;;
  esac
done

die() { echo "build.sh: $*" >&2; exit 2; }
log() { echo "[caffe-build] $*"; }

version=$(awk '$1 == "version" {print $2}' "$here/SOURCE")
mkl_version=$(awk '$1 == "mkl" {print $2}' "$here/SOURCE")
case "$blas" in
  auto) if [ "$(uname -m)" = x86_64 ]; then blas=mkl; else blas=openblas; fi ;;
  mkl) [ "$(uname -m)" = x86_64 ] || die "--blas mkl needs an x86-64 CPU; use --blas openblas." ;;
  openblas) ;;
  *) die "--blas must be mkl or openblas, not '$blas'." ;;
esac

# ---- build options (part of the cache key) ---------------------------------------------
cmake_opts=(
  -DCMAKE_BUILD_TYPE=Release
  -DBLAS=Open
  -Dpython_version=3
  -DUSE_LEVELDB=OFF
  -DUSE_OPENCV=ON
  -DUSE_LMDB=ON
  -DUSE_HDF5=ON
  -DBUILD_docs=OFF
  -DBUILD_matlab=OFF
  -DBUILD_python_layer=ON
)
# Release is -O3; OpenMP lets the project's layer patches parallelise element-wise loops.
cxx_flags="-O3 -fopenmp"
[ "$blas" = mkl ] && variant_blas=mkl$mkl_version || variant_blas=openblas
if [ "$cuda" = 1 ]; then
  cmake_opts+=(
    -DCPU_ONLY=OFF -DUSE_CUDNN=OFF
    -DCUDA_ARCH_NAME=Manual -DCUDA_ARCH_BIN="60 61 70 75 80 86 89 90" -DCUDA_ARCH_PTX=90
  )
  variant=cuda
else
  cmake_opts+=(-DCPU_ONLY=ON)
  variant=cpu
fi

apt_packages=(build-essential cmake dpkg-dev libboost-dev libboost-filesystem-dev
  libboost-system-dev libboost-thread-dev libboost-python-dev libgflags-dev
  libgoogle-glog-dev libhdf5-dev liblmdb-dev libsnappy-dev libopenblas-dev libopencv-dev
  libprotobuf-dev protobuf-compiler python3-dev)
[ "$cuda" = 1 ] && apt_packages+=(nvidia-cuda-toolkit g++-11)

python=$venv/bin/python
[ -x "$python" ] || die "no virtualenv at $venv (run 'make setup', which creates it first)."
pyver=$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')

key_input() {
  echo "$version $variant $variant_blas ${cmake_opts[*]} $cxx_flags python$pyver"
  cat "$here/SOURCE" "$0"
  cat "$here"/patches/*.patch
  # The ABI of what we link against: protobuf and numpy headers.
  protoc --version 2>/dev/null || true
  "$python" -c 'import numpy; print(numpy.__version__)' 2>/dev/null || true
}

cache_root=${DEADNET_CACHE:-$HOME/.cache/deadnet-caffe}

link_into_venv() {
  local dest=$1
  local site
  site=$("$python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  echo "$dest/python" > "$site/deadnet-caffe-build.pth"
  ln -sf "$dest/bin/caffe" "$venv/bin/caffe"
  log "linked $dest into $venv"
}

# ---- system packages ---------------------------------------------------------------------
command -v dpkg-query >/dev/null && command -v apt-get >/dev/null ||
  die "this machine has no apt; build Caffe with the Docker image instead (see README, 'GPU and Docker')."
missing=()
for p in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done

# Numpy must be importable for the key and the build.
"$python" -c 'import numpy' 2>/dev/null || die "numpy is not installed in $venv (run 'make setup')."
key=$(key_input | sha256sum | cut -c1-16)
dest=$cache_root/caffe-$variant-$key

mkl_ok() { [ "$blas" != mkl ] || [ -f "$cache_root/mkl-$mkl_version/.complete" ]; }
if [ -f "$dest/.complete" ] && [ ${#missing[@]} -eq 0 ] && mkl_ok; then
  log "cached build $dest is up to date"
  [ "$link" = 1 ] && link_into_venv "$dest"
  exit 0
fi

if [ ${#missing[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] ||
    die "missing system packages and not root: run 'sudo apt-get install ${missing[*]}' and retry."
  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  if [ "$cuda" = 1 ]; then
    "$here/apt-sources.sh" non-free
    apt-get update -qq
  fi
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # protoc's version is part of the key: on a fresh machine it was missing a moment ago, so
  # the key is computed again (else the next run would build a second time).
  key=$(key_input | sha256sum | cut -c1-16)
  dest=$cache_root/caffe-$variant-$key
fi
[ -f "$dest/.complete" ] && mkl_ok && { [ "$link" = 1 ] && link_into_venv "$dest"; exit 0; }

mkdir -p "$cache_root"
exec 9>"$cache_root/.lock"
flock 9

# ---- MKL (a pip wheel, kept in the cache beside the builds) -------------------------------
blas_cfg=()
if [ "$blas" = mkl ]; then
  mkl_dir=$cache_root/mkl-$mkl_version
  if [ ! -f "$mkl_dir/.complete" ]; then
    log "installing the mkl==$mkl_version wheel into $mkl_dir"
    rm -rf "$mkl_dir.partial"
    "$python" -m pip install --quiet --no-deps --prefix "$mkl_dir.partial" "mkl==$mkl_version" ||
      die "pip could not install mkl==$mkl_version (or pass --blas openblas)."
    # Keep the CBLAS (LP64), GNU-threading and core layers and the CPU kernels MKL loads at
    # run time; ScaLAPACK, BLACS, ILP64 and the other threading layers are not used.
    find "$mkl_dir.partial/lib" -maxdepth 1 -name 'libmkl_*' \
      \( -name '*scalapack*' -o -name '*blacs*' -o -name '*cdft*' -o -name '*ilp64*' \
         -o -name '*tbb_thread*' -o -name '*intel_thread*' -o -name '*sequential*' \
         -o -name 'libmkl_rt*' \) -delete
    rm -rf "$mkl_dir"
    mv "$mkl_dir.partial" "$mkl_dir"
    touch "$mkl_dir/.complete"
  fi
  mkl_link=()
  for l in intel_lp64 gnu_thread core; do
    f=$(ls "$mkl_dir"/lib/libmkl_$l.so.* 2>/dev/null | head -1)
    [ -n "$f" ] || die "$mkl_dir/lib has no libmkl_$l.so.*; delete $mkl_dir and retry."
    mkl_link+=("$f")
  done
  # Caffe's CMake adds the directories of linked libraries to the RUNPATH
  # (CMAKE_INSTALL_RPATH_USE_LINK_PATH), so libcaffe finds MKL in the cache at run time.
  blas_cfg=("-DOpenBLAS_LIB=$(IFS=';'; echo "${mkl_link[*]}")")
fi

# ---- source ------------------------------------------------------------------------------
srcdir=$cache_root/src-$version
if [ ! -f "$srcdir/.fetched" ]; then
  rm -rf "$srcdir"; mkdir -p "$srcdir"
  if ! apt-cache showsrc "caffe=$version" 2>/dev/null | grep -q "^Version: $version"; then
    [ "$(id -u)" = 0 ] ||
      die "apt has no deb-src entry for Debian bullseye and this is not root: run 'sudo $here/apt-sources.sh deb-src && sudo apt-get update'."
    "$here/apt-sources.sh" deb-src
    apt-get update -qq
  fi
  log "downloading the caffe=$version source package"
  (cd "$srcdir" && apt-get source --download-only -qq "caffe=$version" 2>/dev/null) ||
    die "apt could not download the caffe=$version source package."
  touch "$srcdir/.fetched"
fi
while read -r kind sum file; do
  [ "$kind" = sha256 ] || continue
  echo "$sum  $srcdir/$file" | sha256sum --check --quiet - ||
    die "checksum mismatch for $srcdir/$file; delete $srcdir and retry."
done < "$here/SOURCE"

work=$cache_root/work-$variant-$key
rm -rf "$work"; mkdir -p "$work"
log "unpacking and applying Debian's patch series"
(cd "$work" && dpkg-source --no-check -x "$srcdir/caffe_$version.dsc" src >/dev/null)
for p in "$here"/patches/*.patch; do
  log "applying $(basename "$p")"
  patch -d "$work/src" -p1 --quiet --forward < "$p"
done

# ---- build -------------------------------------------------------------------------------
staging=$dest.partial
rm -rf "$staging"; mkdir -p "$staging"/{lib,bin,python}
cuda_cfg=()
if [ "$cuda" = 1 ]; then
  # Debian's toolkit lives in /usr; CUDA wrapper scripts elsewhere on PATH must not win.
  cuda_cfg=(-DCUDA_TOOLKIT_ROOT_DIR=/usr -DCUDA_NVCC_EXECUTABLE=/usr/bin/nvcc
            -DCUDA_HOST_COMPILER=/usr/bin/g++-11)
  export PATH=/usr/bin:$PATH
fi
pyinc=$("$python" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
pylib=$("$python" -c 'import sysconfig, os; print(os.path.join(sysconfig.get_config_var("LIBDIR"), sysconfig.get_config_var("LDLIBRARY")))')
npinc=$("$python" -c 'import numpy; print(numpy.get_include())')
log "configuring ($variant, $jobs jobs)"
cmake -S "$work/src" -B "$work/build" "${cmake_opts[@]}" "${cuda_cfg[@]}" "${blas_cfg[@]}" \
  -DCMAKE_CXX_FLAGS="$cxx_flags" \
  -DPYTHON_EXECUTABLE="$python" -DPYTHON_INCLUDE_DIR="$pyinc" -DPYTHON_LIBRARY="$pylib" \
  -DNUMPY_INCLUDE_DIR="$npinc" \
  -DCMAKE_BUILD_WITH_INSTALL_RPATH=ON -DCMAKE_INSTALL_PREFIX="$dest" \
  > "$work/configure.log" 2>&1 || die "cmake configure failed; see $work/configure.log."
log "compiling libcaffe, the caffe tool and pycaffe (a few minutes)"
make -C "$work/build" -j"$jobs" caffe caffe.bin pycaffe > "$work/build.log" 2>&1 ||
  die "the Caffe build failed; see $work/build.log."

cp -a "$work/build/lib/"libcaffe.so* "$staging/lib/"
cp "$work/build/tools/caffe" "$staging/bin/caffe"
cp -rL "$work/src/python/caffe" "$staging/python/caffe"
rm -rf "$staging/python/caffe/test"
cp "$work/build/lib/_caffe.so" "$staging/python/caffe/_caffe.so"
cp "$work/configure.log" "$work/build.log" "$staging/"
rm -rf "$dest"
mv "$staging" "$dest"
touch "$dest/.complete"
rm -rf "$work"
log "built $dest"
[ "$link" = 1 ] && link_into_venv "$dest"
exit 0
