#!/bin/sh
# Builds the example service hello in three versions into OUTDIR, as plain
# executables and as tar.gz artifacts (containing bin/hello):
#   hello-v1, hello-v2, hello-v3         (v3 = 3.0.0-broken: /healthz answers 500)
#   hello-v1.tar.gz, hello-v2.tar.gz, hello-v3.tar.gz
# and prints the paths. Used by the demo and the integration tests.
set -eu
if [ $# -ne 1 ]; then
	echo "usage: $0 OUTDIR" >&2
	exit 2
fi
out=$1
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$out"
out=$(cd "$out" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

build() { # name version broken
	(cd "$here/.." && CGO_ENABLED=0 go build -trimpath \
		-ldflags "-X main.version=$2 -X main.broken=$3" \
		-o "$out/$1" ./examples/hello)
	mkdir -p "$tmp/$1/bin"
	cp "$out/$1" "$tmp/$1/bin/hello"
	tar -C "$tmp/$1" -czf "$out/$1.tar.gz" bin
	echo "$out/$1"
	echo "$out/$1.tar.gz"
}

build hello-v1 1.0.0 false
build hello-v2 2.0.0 false
build hello-v3 3.0.0-broken true
