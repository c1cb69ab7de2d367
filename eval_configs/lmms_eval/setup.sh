#!/usr/bin/env bash
# Install lmms-eval, and this repository's package beside it, into their own virtual environment:
# .venv-lmms-eval/ at the repository root. Then `lmms-eval --model minigpt4 ...` finds the
# MiniGPT-4 model through the "lmms_eval.models" entry point of pyproject.toml.
#
# lmms-eval 0.7.3 pins wandb 0.25.0 (protobuf<7) against the main environment's protobuf 7, so it
# gets a venv of its own, as img2dataset does; both `pip check`s stay clean.
#
#   bash eval_configs/lmms_eval/setup.sh            # create or update; quick when already done
#   bash eval_configs/lmms_eval/setup.sh --force    # delete and reinstall
#
# Environment: LMMS_EVAL_VENV (default <repo>/.venv-lmms-eval), PYTHON (default python3.11,
# else python3).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
venv="${LMMS_EVAL_VENV:-$repo/.venv-lmms-eval}"
requirements="$here/requirements.txt"
stamp="$venv/.requirements.sha256"

force=0
for arg in "$@"; do
  case "$arg" in
    --force) force=1 ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "setup.sh: unknown argument '$arg' (use --force or --help)" >&2; exit 2 ;;
  esac
done

# The package's metadata (entry point) lives in pyproject.toml: reinstall when it changes too.
want="$(cat "$requirements" "$repo/pyproject.toml" | sha256sum | cut -d' ' -f1)"
if [ "$force" = 0 ] && [ -x "$venv/bin/lmms-eval" ] && [ -f "$stamp" ] \
   && [ "$(cat "$stamp")" = "$want" ]; then
  echo "lmms-eval already installed in $venv (requirements unchanged)"
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
# The package without dependencies (they are in the pinned set); setuptools is pinned there.
"$venv/bin/python" -m pip install -q --no-deps --no-build-isolation -e "$repo"
"$venv/bin/python" -m pip check
# Import both once (this also compiles the bytecode) and check that lmms-eval sees the model.
HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 WANDB_MODE=disabled "$venv/bin/python" -c \
  "from lmms_eval.models import get_model; get_model('minigpt4')"
echo "$want" > "$stamp"
echo "lmms-eval $("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("lmms_eval"))') installed in $venv ($(( $(date +%s) - start )) s)"
