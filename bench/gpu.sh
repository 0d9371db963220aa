#!/usr/bin/env bash
# The GPU benchmark as one command on a lent GPU machine (bench/bench_gpu.py), and its preparation here.
#
#   bash bench/gpu.sh prepare     # here: wheels the GPU machine lacks -> .whl/, the annotation file -> .gpu/
#   bash bench/gpu.sh run         # there (carry .whl and .gpu): install the wheels, run, copy the results to $OUT
#   bash bench/gpu.sh rehearse    # here, after prepare: the GPU machine's Python and torch, on the CPU (below)
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-run}" in
  prepare)
    grep -qx '/.whl/' .git/info/exclude || echo /.whl/ >> .git/info/exclude
    grep -qx '/.gpu/' .git/info/exclude || echo /.gpu/ >> .git/info/exclude
    mkdir -p .gpu && cp ../shared/mtat-real/annotations_final.csv .gpu/
    # The versions tested here (make setup's .venv): for Python 3.12 the registry's newest can differ
    # (librosa 1.0.1 against the 0.11.0 the tests ran on).
    test -x .venv/bin/python || make setup
    pins=$(.venv/bin/python -c 'import importlib.metadata as m, sys; print(" ".join(f"{n}=={m.version(n)}" for n in sys.argv[1:]))' \
      nnAudio librosa soundfile soxr audioread pooch platformdirs decorator cffi pycparser pedalboard \
      lazy_loader msgpack joblib pytest pluggy iniconfig packaging)
    rm -rf .whl
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
      --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl $pins
    du -sh .whl ;;
  run)
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
    python3 bench/bench_gpu.py --csv .gpu/annotations_final.csv --work /tmp/gpu --json "${OUT:-/tmp}/gpu.json" \
      --md "${OUT:-/tmp}/gpu.md" --log "${OUT:-/tmp}/bench.log" 2>&1 | tee "${OUT:-/tmp}/gpu.log" ;;
  rehearse)
    # What `run` does there, done here first, so that a lent machine's minutes are not spent on an import:
    # its Python (3.12) and torch (2.11.0, the CUDA build, which runs on the CPU) in a venv of their own
    # (about 5 GB, 2 minutes from the registry, kept for the next time), the carried wheels installed as
    # there, then a dry run of the benchmark on 300 rows and the whole test suite.
    test -d .whl || { echo "bash bench/gpu.sh prepare first" >&2; exit 2; }
    venv=${REHEARSAL:-/tmp/gpu-rehearsal}
    py=$(command -v python3.12 || true)
    test -n "$py" || { echo "no python3.12 here: the GPU machine's Python is 3.12" >&2; exit 2; }
    test -x "$venv/bin/python" || { "$py" -m venv "$venv" && "$venv/bin/python" -m pip install -q torch==2.11.0 \
      numpy numba h5py pandas scipy scikit-learn matplotlib tqdm threadpoolctl pygments; }
    rm -rf "$venv/site" "$venv/work"
    "$venv/bin/python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$venv/site" .whl/*.whl
    export PYTHONPATH=$venv/site:$PWD PYTHONUNBUFFERED=1
    "$venv/bin/python" bench/bench_gpu.py --csv .gpu/annotations_final.csv --work "$venv/work" --rows 300 --budget 300
    "$venv/bin/python" -m pytest -q -p no:cacheprovider ;;
  *) echo "usage: bash bench/gpu.sh prepare|run|rehearse" >&2; exit 2 ;;
esac
