#!/bin/sh
# Usage: gen-gomod.sh <k8s version without v, e.g. 1.37.2>
# Writes go.mod for a wrapper module that builds kube-apiserver from k8s.io/kubernetes via the Go module proxy.
set -e
K=$1; S=0.${K#1.}
GOFLAGS=-mod=mod go mod download -json k8s.io/kubernetes@v$K >/dev/null
MOD=$(go env GOMODCACHE)/cache/download/k8s.io/kubernetes/@v/v$K.mod
{
  echo "module github.com/signetid/signet/test/kube/apiserver"; echo
  echo "go $(awk '/^go /{print $2}' $MOD)"; echo
  echo "require k8s.io/kubernetes v$K"; echo
  echo "replace ("
  sed -n '/^replace (/,/^)/p' $MOD | awk '/=> \.\/staging/{print "\t" $1 " => " $1 " v'$S'"}'
  echo ")"
} > go.mod
