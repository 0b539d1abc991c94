#!/usr/bin/env bash
# The single-user image for Kubernetes: repo2docker on this repository, so it reads binder/
# (binder/environment.yml, binder/postBuild) exactly as Binder does. Needs Docker and
# `pip install jupyter-repo2docker`.
#   deploy/kubernetes/build-image.sh REGISTRY/mech-interp-course:TAG [--push]
set -euo pipefail
image="${1:?usage: $0 REGISTRY/NAME:TAG [--push]}"
shift
cd "$(dirname "$0")/../.."
exec repo2docker --no-run --user-id 1000 --user-name jovyan --image-name "$image" "$@" .
