#!/bin/sh
# Builds the inventory binary and leaves it in dist/, the folder wharf packs.
set -eu
target="${CARGO_TARGET_DIR:-../../../target}"
cargo build --release --quiet -p shop-inventory --target-dir "$target"
mkdir -p dist
cp "$target/release/shop-inventory" dist/shop-inventory
