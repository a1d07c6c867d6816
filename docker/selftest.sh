#!/usr/bin/env bash
# The image's self-test (the Dockerfile's selftest stage, `make docker-check`). Runs in the
# runtime stage as built, during the image build, where no GPU is visible:
#
#   1. pycaffe imports and is the CUDA build; every library it needs resolves (ldd);
#   2. cuobjdump lists real code for sm_60 .. sm_90 and compute_90 PTX in libcaffe;
#   3. the tiny demo runs on the CPU (simulate .. report, Caffe training included);
#   4. `deadnet train|heatmap|gradcam --gpu 0` on the demo's files: one sentence, exit 2, no
#      core file (with core dumps allowed); where a GPU is visible, tests/gpu runs instead;
#   5. the Caffe tests that need no shared data: tests/test_caffe_build.py and
#      tests/test_caffe_patches.py.
#
# Every check runs; the script exits 1 at the end if any failed.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
failed=()
check() {  # check NAME COMMAND...: run one check, record a failure
  local name=$1
  shift
  echo "== $name"
  local t0=$SECONDS
  if "$@"; then
    echo "-- ok: $name ($((SECONDS - t0)) s)"
  else
    echo "-- FAILED: $name ($((SECONDS - t0)) s)"
    failed+=("$name")
  fi
}
work=$(mktemp -d)
lib=$(python -c 'import caffe, pathlib; print(pathlib.Path(caffe.__file__).resolve().parents[2] / "lib")')

import_caffe() {
  python -c 'import caffe; print("pycaffe", caffe.__file__)' || return 1
  ldd "$lib"/libcaffe.so.* "$lib"/../python/caffe/_caffe.so | tee "$work/ldd.txt" |
    grep -E 'libcudart|libcublas|libcurand|libmkl_core|not found' | sed 's/ (0x[0-9a-f]*)//' | sort -u
  ! grep -q 'not found' "$work/ldd.txt" && grep -q libcudart "$work/ldd.txt"
}

cuda_architectures() {
  local f ok=0 sm
  f=$(ls "$lib"/libcaffe.so.* | head -1)
  cuobjdump --list-elf "$f" > "$work/elf.txt" || return 1
  cuobjdump --list-ptx "$f" > "$work/ptx.txt" || return 1
  echo "cuobjdump --list-elf $(basename "$f"): ELF files per architecture"
  grep -o 'sm_[0-9]*' "$work/elf.txt" | sort | uniq -c
  echo "cuobjdump --list-ptx: PTX files per architecture"
  grep -o 'sm_[0-9]*\|compute_[0-9]*' "$work/ptx.txt" | sort | uniq -c
  for sm in 60 61 70 75 80 86 89 90; do
    grep -q "sm_$sm\." "$work/elf.txt" || { echo "no sm_$sm code"; ok=1; }
  done
  grep -q 'sm_90\.' "$work/ptx.txt" || { echo "no compute_90 PTX"; ok=1; }
  return $ok
}

tiny_demo() {
  deadnet demo --out "$work/demo" --preset tiny --max-iter 2 --test-interval 2 \
    --report-every 5 --classmodel-iterations 3 --gradcam-per-class 4 > "$work/demo.log" 2>&1
  local rc=$?
  grep '^\[demo\]' "$work/demo.log"
  [ $rc = 0 ] || tail -20 "$work/demo.log"
  return $rc
}

# gpu_refused NAME ARGS...: deadnet NAME ARGS... --gpu 0 must exit 2 with one sentence on
# stderr, nothing on stdout, and leave no core file, in a folder of its own with core dumps on.
gpu_refused() {
  local name=$1 dir=$work/gpu-$1 rc
  shift
  mkdir -p "$dir"
  (cd "$dir" && ulimit -c unlimited 2>/dev/null
   deadnet "$name" "$@" --gpu 0 > "$dir/stdout" 2> "$dir/stderr")
  rc=$?
  echo "deadnet $name ... --gpu 0: exit $rc; stderr: $(cat "$dir/stderr")"
  local cores
  cores=$(find "$dir" -maxdepth 1 -name 'core*' | wc -l)
  [ $rc = 2 ] || { echo "exit status $rc, not 2"; return 1; }
  [ "$(wc -l < "$dir/stderr")" = 1 ] || { echo "stderr is not one line"; return 1; }
  grep -q "^deadnet $name: .*GPU" "$dir/stderr" || { echo "stderr does not name the GPU"; return 1; }
  [ ! -s "$dir/stdout" ] || { echo "stdout is not empty"; return 1; }
  [ "$cores" = 0 ] || { echo "$cores core file(s) written"; return 1; }
}

gpu_precheck() {
  local d=$work/demo ok=0
  gpu_refused train --dataset "$d/dataset_A" --solver prototxt/dataset_a/solver.prototxt \
    --run "$work/gpu-train-run" || ok=1
  gpu_refused heatmap --weights "$d/train/latest.caffemodel" --experiment "$d/experiment" \
    --out "$work/gpu-heatmap-out" --every 5 || ok=1
  gpu_refused gradcam --weights "$d/train/latest.caffemodel" --dataset "$d/dataset_A" \
    --out "$work/gpu-gradcam-out" || ok=1
  return $ok
}

caffe_tests() {
  python -m pytest -q -p no:cacheprovider tests/test_caffe_build.py tests/test_caffe_patches.py
}

check "import caffe (the CUDA build) and its libraries" import_caffe
check "CUDA architectures in libcaffe" cuda_architectures
check "tiny demo on the CPU" tiny_demo
if [ -e /dev/nvidiactl ]; then
  check "GPU smoke test (a GPU is visible)" python -m pytest -q -p no:cacheprovider tests/gpu
else
  check "GPU pre-check without a GPU" gpu_precheck
fi
check "Caffe tests" caffe_tests
rm -rf "$work"
if [ ${#failed[@]} -gt 0 ]; then
  echo "selftest: FAILED: ${failed[*]}"
  exit 1
fi
echo "selftest: all checks passed"
