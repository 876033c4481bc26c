#!/usr/bin/env bash
# Refresh the vendored TradingView Lightweight Charts™ build from the npm
# registry: the standalone production bundle (it defines the global
# `LightweightCharts`), its LICENSE and its NOTICE.
#
#   scripts/update-lightweight-charts.sh          # latest published version
#   scripts/update-lightweight-charts.sh 5.2.1    # a given version
#
# Needs npm and tar. Only the three files in the vendor folder change; review
# the diff (and the package's typings.d.ts for API changes) before committing.
set -euo pipefail

cd "$(dirname "$0")/.."
dest=internal/web/static/vendor/lightweight-charts
bundle=lightweight-charts.standalone.production.js

version=${1:-$(npm view lightweight-charts version)}
case $version in
'' | *[!0-9A-Za-z.+-]*)
	echo "update-lightweight-charts: bad version '$version'" >&2
	exit 2
	;;
esac

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

tarball=$(cd "$tmp" && npm pack --silent "lightweight-charts@$version" | tail -n 1)
tar -xzf "$tmp/$tarball" -C "$tmp"
pkg=$tmp/package

got=$(sed -n 's/^ *"version": *"\([^"]*\)".*/\1/p' "$pkg/package.json" | head -n 1)
if [ "$got" != "$version" ]; then
	echo "update-lightweight-charts: asked for $version, the package says '$got'" >&2
	exit 1
fi
if [ ! -s "$pkg/dist/$bundle" ] || ! grep -q 'window.LightweightCharts=' "$pkg/dist/$bundle"; then
	echo "update-lightweight-charts: dist/$bundle is missing or no longer defines window.LightweightCharts" >&2
	exit 1
fi

mkdir -p "$dest"
cp "$pkg/dist/$bundle" "$dest/$bundle"
cp "$pkg/LICENSE" "$dest/LICENSE"
if [ -f "$pkg/NOTICE" ]; then
	cp "$pkg/NOTICE" "$dest/NOTICE"
else
	# The npm package does not ship the project's NOTICE file; its README
	# asks users to show the attribution notice from it, which reads:
	cat >"$dest/NOTICE" <<'EOF'
TradingView Lightweight Charts
Copyright (c) 2023 TradingView, Inc. https://www.tradingview.com/
EOF
fi

echo "lightweight-charts $version -> $dest"
