#!/usr/bin/env bash
# Builds the seed corpus of the `import` fuzz target from the peer models and the
# shipped examples (not committed: the peer models are not ours to redistribute).
# Usage: fuzz/seed.sh && cargo +nightly fuzz run import -- -max_total_time=300
set -euo pipefail
cd "$(dirname "$0")"
mkdir -p corpus/import
peer=${MOTE_PEER_MODELS:-../../shared/peer-models}
find "$peer" ../examples -name '*.onnx' | while read -r f; do
  cp "$f" "corpus/import/$(echo "$f" | tr '/.' '__')"
done
echo "seeded $(ls corpus/import | wc -l) files into fuzz/corpus/import"
