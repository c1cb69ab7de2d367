#!/bin/sh
# Download the images of a converted caption list into webdataset shards with img2dataset.
#
# download_cc_sbu.sh and download_laion.sh are symbolic links to this file; `cp` turns either into
# a complete standalone script, as the guide does. Run under one of those names with no arguments
# it does what the original did, in the current folder:
#   download_cc_sbu.sh: ccs_synthetic_filtered_large.tsv   -> cc_sbu_dataset/{00000..}.tar
#   download_laion.sh:  laion_synthetic_filtered_large.tsv -> laion_dataset/{00000..}.tar
# with the original's img2dataset flags (--output_format webdataset, url/caption columns,
# 16 processes, 128 threads), except: image size 224 (as the original's later commit) and
# wandb off unless --enable_wandb is given.
#
# Usage: download_laion.sh [options] [-- more img2dataset options]
#   --url_list FILE       the .tsv (or .parquet) from convert_*.py
#   --output_folder DIR   where the shards go
#   --processes N         img2dataset --processes_count (16)
#   --threads N           img2dataset --thread_count (128)
#   --image_size N        side of the stored images (224; the original's first version used 256)
#   --enable_wandb        log to Weights & Biases (off by default)
#
# img2dataset is taken from $IMG2DATASET if set, else from PATH, else from the repository's
# .venv-img2dataset/ (made by dataset/setup_img2dataset.sh).
# POSIX sh on purpose: the guide runs these scripts with `sh`.
set -eu

name=$(basename "$0" .sh)
case "$name" in
  download_cc_sbu) url_list=ccs_synthetic_filtered_large.tsv; output_folder=cc_sbu_dataset ;;
  download_laion) url_list=laion_synthetic_filtered_large.tsv; output_folder=laion_dataset ;;
  *) url_list=""; output_folder="" ;;
esac
processes=16
threads=128
image_size=224
enable_wandb=False

usage() { sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'; }
need() {
  if [ $# -lt 2 ] || [ -z "$2" ]; then
    echo "$name: option $1 needs a value (see --help)" >&2
    exit 2
  fi
}
is_int() {
  case "$2" in
    ''|*[!0-9]*|0*) echo "$name: $1 must be a positive integer, got '$2'" >&2; exit 2 ;;
  esac
}

while [ $# -gt 0 ]; do
  case "$1" in
    --url_list) need "$@"; url_list=$2; shift 2 ;;
    --output_folder) need "$@"; output_folder=$2; shift 2 ;;
    --processes|--processes_count) need "$@"; is_int "$1" "$2"; processes=$2; shift 2 ;;
    --threads|--thread_count) need "$@"; is_int "$1" "$2"; threads=$2; shift 2 ;;
    --image_size) need "$@"; is_int "$1" "$2"; image_size=$2; shift 2 ;;
    --enable_wandb) enable_wandb=True; shift ;;
    -h|--help) usage; exit 0 ;;
    --) shift; break ;;
    *) echo "$name: unknown option '$1' (see --help; pass img2dataset options after --)" >&2
       exit 2 ;;
  esac
done

if [ -z "$url_list" ] || [ -z "$output_folder" ]; then
  echo "$name: give --url_list FILE and --output_folder DIR" >&2
  exit 2
fi
if [ ! -f "$url_list" ]; then
  echo "$name: url list '$url_list' not found; make it with convert_laion.py / convert_cc_sbu.py" >&2
  exit 2
fi
case "$url_list" in
  *.parquet) input_format=parquet ;;
  *.tsv) input_format=tsv ;;
  *.tsv.gz) input_format=tsv.gz ;;
  *.csv) input_format=csv ;;
  *) echo "$name: '$url_list' should end in .tsv or .parquet (the converters' outputs)" >&2
     exit 2 ;;
esac

here=$(cd "$(dirname "$0")" && pwd)
if [ -n "${IMG2DATASET:-}" ]; then
  img2dataset=$IMG2DATASET
elif command -v img2dataset >/dev/null 2>&1; then
  img2dataset=$(command -v img2dataset)
elif [ -x "$here/../.venv-img2dataset/bin/img2dataset" ]; then
  img2dataset="$here/../.venv-img2dataset/bin/img2dataset"
else
  echo "$name: img2dataset not found. Install it with 'bash dataset/setup_img2dataset.sh' in the" >&2
  echo "  repository (it goes to .venv-img2dataset/), or put it on PATH, or set IMG2DATASET." >&2
  exit 127
fi

export NO_ALBUMENTATIONS_UPDATE=1
if [ "$enable_wandb" = False ]; then
  export WANDB_MODE=disabled
fi

echo "$name: $url_list -> $output_folder (image size $image_size, $processes processes x $threads threads, wandb $enable_wandb)"
exec "$img2dataset" --url_list "$url_list" --input_format "$input_format" \
  --url_col "url" --caption_col "caption" --output_format webdataset \
  --output_folder "$output_folder" --processes_count "$processes" --thread_count "$threads" \
  --image_size "$image_size" --enable_wandb "$enable_wandb" "$@"
