#!/usr/bin/env bash
# Install img2dataset into its own virtual environment, .venv-img2dataset/ at the repository root.
#
# img2dataset 1.47 needs webdataset<0.3 and pandas<3 (and pulls wandb and albumentations), which
# conflict with the main environment's pins; a separate venv keeps both `pip check`s clean.
# The download scripts (dataset/download_*.sh) find it there by themselves.
#
#   bash dataset/setup_img2dataset.sh            # create or update; quick when already done
#   bash dataset/setup_img2dataset.sh --force    # delete and reinstall
#
# Environment: IMG2DATASET_VENV (default <repo>/.venv-img2dataset), PYTHON (default python3.11,
# else python3; img2dataset 1.47 supports Python 3.8-3.12).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(dirname "$here")"
venv="${IMG2DATASET_VENV:-$repo/.venv-img2dataset}"
requirements="$here/requirements-img2dataset.txt"
stamp="$venv/.requirements.sha256"

force=0
for arg in "$@"; do
  case "$arg" in
    --force) force=1 ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "setup_img2dataset.sh: unknown argument '$arg' (use --force or --help)" >&2; exit 2 ;;
  esac
done

want="$(sha256sum "$requirements" | cut -d' ' -f1)"
if [ "$force" = 0 ] && [ -x "$venv/bin/img2dataset" ] && [ -f "$stamp" ] \
   && [ "$(cat "$stamp")" = "$want" ]; then
  echo "img2dataset already installed in $venv (requirements unchanged)"
  exit 0
fi

PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
start=$(date +%s)
if [ "$force" = 1 ]; then
  rm -rf "$venv"
fi
[ -x "$venv/bin/python" ] || "$PYTHON" -m venv "$venv"
export PIP_DISABLE_PIP_VERSION_CHECK=1
# Only the pinned set: an unpinned resolve would pick whatever is newest on the day.
"$venv/bin/python" -m pip install -q -r "$requirements"
"$venv/bin/python" -m pip check
# Import it once (this also compiles the bytecode) with its network side effects off.
NO_ALBUMENTATIONS_UPDATE=1 WANDB_MODE=disabled "$venv/bin/python" -c "import img2dataset"
echo "$want" > "$stamp"
echo "img2dataset $("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("img2dataset"))') installed in $venv ($(( $(date +%s) - start )) s)"
