# Steps shared by the scripts that install a tool into a virtual environment of its own
# (dataset/setup_img2dataset.sh, eval_configs/lmms_eval/setup.sh): the tools' pins conflict with
# the main environment's, so each gets a venv, reinstalled only when what it was built from
# changes. Source this file; each function says which variables it reads.

# Reads the script's arguments; sets `force`. Reads: script (its name), usage (sed range of the
# script's usage lines).
own_venv_arguments() {
  force=0
  for arg in "$@"; do
    case "$arg" in
      --force) force=1 ;;
      -h|--help) sed -n "$usage" "$0"; exit 0 ;;
      *) echo "$script: unknown argument '$arg' (use --force or --help)" >&2; exit 2 ;;
    esac
  done
}

# Succeeds when $venv already holds $tool built from what hashes to $want (and no --force).
own_venv_is_current() {
  [ "$force" = 0 ] && [ -x "$venv/bin/$tool" ] && [ -f "$venv/.requirements.sha256" ] \
    && [ "$(cat "$venv/.requirements.sha256")" = "$want" ]
}

# (Re)creates $venv and installs the pinned requirements file $1 into it. Sets `start`.
own_venv_install() {
  start=$(date +%s)
  PYTHON="${PYTHON:-python3.11}"
  command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
  if [ "$force" = 1 ]; then
    rm -rf "$venv"
  fi
  [ -x "$venv/bin/python" ] || "$PYTHON" -m venv "$venv"
  export PIP_DISABLE_PIP_VERSION_CHECK=1
  # Only the pinned set: an unpinned resolve would pick whatever is newest on the day.
  "$venv/bin/python" -m pip install -q -r "$1"
}

# Records the install as current and says what was installed: $1 is the distribution's name.
own_venv_done() {
  echo "$want" > "$venv/.requirements.sha256"
  local version
  version="$("$venv/bin/python" -c "import importlib.metadata as m; print(m.version('$1'))")"
  echo "$1 $version installed in $venv ($(( $(date +%s) - start )) s)"
}
