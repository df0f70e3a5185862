#!/usr/bin/env bash
# Installs what `make test` needs on a fresh Debian machine: PostgreSQL (the
# store suite runs against a real server), nginx (the helper's reload tests),
# openssl (the PKIs of the upstream-authority and x509pop tests, made as an
# operator would), openssh-client (ssh-keygen: the SSH CA and host
# certificates of the sshpop tests).
# Idempotent and quiet when everything is present.
set -euo pipefail

need=()
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx)
command -v psql >/dev/null 2>&1 || need+=(postgresql-client)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v ssh-keygen >/dev/null 2>&1 || need+=(openssh-client)

if [ ${#need[@]} -gt 0 ]; then
	if [ "$(id -u)" -ne 0 ]; then
		echo "setup: need ${need[*]} but not root; install them or run as root" >&2
		exit 1
	fi
	echo "setup: installing ${need[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq >/dev/null
	apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# Debian's nginx package starts a system nginx on port 80; tests run their own.
if command -v systemctl >/dev/null 2>&1; then systemctl stop nginx >/dev/null 2>&1 || true; fi
pkill -x nginx >/dev/null 2>&1 || true
exit 0
