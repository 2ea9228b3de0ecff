#!/usr/bin/env bash
# Makes what benchmarks/gpu_run.sh needs on a lent GPU machine, which has no network and no ../shared:
#   .whl/       the pypng and PyAV wheels (PyAV's is cp311-abi3 and carries its FFmpeg: any Python >= 3.11 there)
#   .gpu_data/  a copy of ../shared's data/benchmarks/{Set5,Set14}, fixtures/reference and fixtures/decoders,
#               without tiny-rdn-liif.* (14 MB: the tree and the carried paths share 64 MiB; its GPU test skips)
# Both folders are ignored through the repository's info/exclude (a worktree's .git is a file: git names it). Then, in one device call:
#   run(command="bash benchmarks/gpu_run.sh", carry=[".whl", ".gpu_data"], timeout_s=600)
#
#   bash scripts/prepare_gpu_run.sh          # in any folder; SHARED=/path/to/shared to override ../shared

set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${SHARED:-../shared}
PIP=${PIP:-python3 -m pip}
LIMIT_MB=64

exclude=$(git rev-parse --git-path info/exclude)
mkdir -p "$(dirname "$exclude")"
for ignored in /.whl/ /.gpu_data/; do
    grep -qxF "$ignored" "$exclude" 2>/dev/null || echo "$ignored" >> "$exclude"
done

rm -rf .whl .gpu_data
$PIP download -q --no-deps --only-binary=:all: -d .whl pypng av

mkdir -p .gpu_data/data/benchmarks .gpu_data/fixtures
for set in Set5 Set14; do
    cp -r "$SHARED/data/benchmarks/$set" .gpu_data/data/benchmarks/
done
cp -r "$SHARED/fixtures/decoders" .gpu_data/fixtures/
mkdir .gpu_data/fixtures/reference
find "$SHARED/fixtures/reference" -maxdepth 1 -type f ! -name 'tiny-rdn-liif.*' \
    -exec cp {} .gpu_data/fixtures/reference/ \;
chmod -R u+w .gpu_data

# what travels: tracked and untracked-not-ignored files, plus the two carried folders
tree_kb=$(git ls-files -z --cached --others --exclude-standard | du -c -k --files0-from=- 2>/dev/null | tail -1 | cut -f1)
carried_kb=$(du -s -k .whl .gpu_data | awk '{s += $1} END {print s}')
total_mb=$(( (tree_kb + carried_kb) / 1024 ))
echo "prepared .whl ($(ls .whl | tr '\n' ' ')) and .gpu_data: ${total_mb} MiB of ${LIMIT_MB} MiB travels"
if [ "$total_mb" -ge "$LIMIT_MB" ]; then
    echo "error: the tree and the carried folders exceed ${LIMIT_MB} MiB; leave more out of .gpu_data" >&2
    exit 1
fi
