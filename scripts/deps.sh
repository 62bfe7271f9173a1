#!/usr/bin/env bash
# Installs the Debian packages ds needs, only when something is missing (apt-get; sudo when not root).
set -euo pipefail
pkgs=(build-essential cmake ninja-build pkg-config mpich libmpich-dev libcli11-dev libsimdjson-dev
      libzstd-dev zstd libsentencepiece-dev sentencepiece catch2 libopenblas-openmp-dev libcpp-httplib-dev python3 jq gnuplot-nox)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "deps: installing ${missing[*]}" >&2
sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
