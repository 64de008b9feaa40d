#!/usr/bin/env bash
# Builds the Debian package target/debian/pxed_<version>_<arch>.deb:
# the binary, the man pages and shell completions it generates from its own
# command-line definitions (`pxed generate`, see src/cli/generate.rs), then
# cargo-deb with the layout in Cargo.toml [package.metadata.deb].
# Needs cargo-deb (`cargo install cargo-deb --locked`).
# PXED_DEB_PROFILE=dev packages the debug build (CI: it is built for the
# tests anyway, and a release build would add minutes to check only the
# packaging); the default is release.
set -euo pipefail
cd "$(dirname "$0")/.."
profile=${PXED_DEB_PROFILE:-release}
dir=release
[ "$profile" = dev ] && dir=debug
cargo build --profile "$profile" --locked --bin pxed
rm -rf "target/$dir/generated"
"target/$dir/pxed" generate --out "target/$dir/generated"
cargo deb --no-build --locked --profile "$profile" "$@"
