# Sourced by scripts/gpu_session.sh and scripts/gpu_default.sh on a lent GPU: installs the wheels the GPU
# image lacks (made here by `bash scripts/gpu_session.sh wheels`) to /tmp/site and puts them and the repo
# on PYTHONPATH. WHEELS=DIR for another folder, WHEELS=none to use the packages already installed.
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
WHEELS=${WHEELS:-.whl}
if [ -d "$WHEELS" ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        "$WHEELS"/*.whl || exit 1
    export PYTHONPATH=/tmp/site:$PWD  # the scripts import the repo's packages
fi
