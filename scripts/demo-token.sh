#!/usr/bin/env bash
# Mints a token (JWT, EdDSA) from the demo's stand-in identity provider, for trying token login.
set -euo pipefail

usage() {
  cat <<'USAGE'
Usage: scripts/demo-token.sh [--dir DIR] [--identity NAME] [--role ROLE] [--ttl SECONDS]

Prints a JWT signed by the demo issuer whose keys scripts/gen-config.sh wrote to
DIR/oidc (DIR defaults to .run/demo, the folder `make demo` uses). phigate
verifies it against DIR/oidc/jwks.json (oidc.demo_idp in DIR/phigate.yaml).
  --identity  the token's sub (default demo_token_agent, an identity of the demo)
  --role      the phigate_role claim (default analyst; the demo issuer allows only analyst)
  --ttl       lifetime in seconds (default 600)
Use it as the password, over TLS only:
  PGPASSWORD=$(scripts/demo-token.sh) psql "host=127.0.0.1 port=56432 user=demo_token_agent dbname=clinic sslmode=require"
This stands in for a real identity provider: in production the agent's platform issues the token.
USAGE
}

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
DIR=$REPO/.run/demo SUB=demo_token_agent ROLE=analyst TTL=600
while [[ $# -gt 0 ]]; do
  case $1 in
    --dir) DIR=$2; shift 2 ;;
    --identity) SUB=$2; shift 2 ;;
    --role) ROLE=$2; shift 2 ;;
    --ttl) TTL=$2; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
  esac
done
KEY=$DIR/oidc/issuer_ed25519.key
[[ -r $KEY ]] || { echo "demo-token: no issuer key at $KEY (run make demo, or scripts/gen-config.sh)" >&2; exit 1; }
[[ $TTL =~ ^[0-9]+$ ]] || { echo "demo-token: --ttl takes seconds" >&2; exit 2; }
json_str() { printf '%s' "$1" | sed 's/\\/\\\\/g; s/"/\\"/g'; }
b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }
now=$(date +%s)
header='{"alg":"EdDSA","typ":"JWT","kid":"demo-1"}'
payload=$(printf '{"iss":"https://idp.demo.phigate.invalid","aud":"phigate","sub":"%s","phigate_role":"%s","iat":%d,"nbf":%d,"exp":%d}' \
  "$(json_str "$SUB")" "$(json_str "$ROLE")" "$now" "$now" "$((now + TTL))")
signing_input="$(printf '%s' "$header" | b64url).$(printf '%s' "$payload" | b64url)"
tmp=$(mktemp); trap 'rm -f "$tmp"' EXIT
printf '%s' "$signing_input" > "$tmp"
sig=$(openssl pkeyutl -sign -rawin -inkey "$KEY" -in "$tmp" | b64url)
printf '%s.%s\n' "$signing_input" "$sig"
