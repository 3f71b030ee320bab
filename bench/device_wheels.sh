#!/usr/bin/env bash
# Fetch, here, the wheels bench/device_scale.sh installs on the device machine, where nothing can be
# downloaded: .device/wheels (ignored by git, carried by the call). The device runs Python 3.12 on
# x86-64 Linux; PYTHON_VERSION overrides the version.
#
#   bash bench/device_wheels.sh
#   run(command="bash bench/device_scale.sh", carry=[".device"], timeout_s=590)
set -euo pipefail
cd "$(dirname "$0")/.."
version="${PYTHON_VERSION:-3.12}"
abi="cp${version/./}"
rm -rf .device/wheels && mkdir -p .device/wheels
python3 -m pip download -q -d .device/wheels --only-binary=:all: \
  --python-version "$version" --implementation cp --abi "$abi" \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -r bench/device_requirements.txt
du -sh .device/wheels  # the call carries at most 64 MiB in all, the working tree included
