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
script=setup.sh usage=2,14p tool=lmms-eval
# shellcheck source=dataset/own_venv.sh
source "$repo/dataset/own_venv.sh"
own_venv_arguments "$@"

# The package's metadata (entry point) lives in pyproject.toml: reinstall when it changes too.
want="$(cat "$requirements" "$repo/pyproject.toml" | sha256sum | cut -d' ' -f1)"
if own_venv_is_current; then
  echo "lmms-eval already installed in $venv (requirements unchanged)"
  exit 0
fi

own_venv_install "$requirements"
# The package without dependencies (they are in the pinned set); setuptools is pinned there.
"$venv/bin/python" -m pip install -q --no-deps --no-build-isolation -e "$repo"
"$venv/bin/python" -m pip check
# Import both once (this also compiles the bytecode) and check that lmms-eval sees the model.
HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 WANDB_MODE=disabled "$venv/bin/python" -c \
  "from lmms_eval.models import get_model; get_model('minigpt4')"
own_venv_done lmms_eval
