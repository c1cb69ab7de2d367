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
script=setup_img2dataset.sh usage=2,13p tool=img2dataset
# shellcheck source=dataset/own_venv.sh
source "$here/own_venv.sh"
own_venv_arguments "$@"

want="$(sha256sum "$requirements" | cut -d' ' -f1)"
if own_venv_is_current; then
  echo "img2dataset already installed in $venv (requirements unchanged)"
  exit 0
fi

own_venv_install "$requirements"
"$venv/bin/python" -m pip check
# Import it once (this also compiles the bytecode) with its network side effects off.
NO_ALBUMENTATIONS_UPDATE=1 WANDB_MODE=disabled "$venv/bin/python" -c "import img2dataset"
own_venv_done img2dataset
