#!/usr/bin/env bash
# Install Fashion-MNIST from Debian's dataset-fashion-mnist package (IDX .gz files under
# /usr/share/datasets/fashion-mnist). No download happens at run time in compress itself.
set -euo pipefail
DIR=/usr/share/datasets/fashion-mnist
if [ -f "$DIR/t10k-labels-idx1-ubyte.gz" ]; then
  echo "fashion-mnist already installed in $DIR"
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
$SUDO apt-get update -q
$SUDO apt-get install -y -q dataset-fashion-mnist
ls "$DIR"
