#!/usr/bin/env bash
# The whole test suite: lint, generated-code check, typecheck, guest image, then every test
# file under test/ with node's test runner. Prints "N passed, N failed" at the end.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
  cat <<USAGE
Usage: ./nestbox test [--skip-image] [test files...]

Runs lint (biome), checks that generated protobuf code is up to date, typechecks (and the
dashboard with svelte-check), checks server layering, runs the unit tests, builds the
guest image (cached), then runs the tests (default: every test/**/*.test.ts).
  --skip-image   do not build the guest image (tests that boot it will fail)
USAGE
}

SKIP_IMAGE=0
files=()
for a in "$@"; do
  case "$a" in
    --skip-image) SKIP_IMAGE=1 ;;
    -h|--help) usage; exit 0 ;;
    -*) usage >&2; die "unknown option: $a" ;;
    *) files+=("$a") ;;
  esac
done

cd "$NESTBOX_ROOT"
use_node

step "lint (biome)"
npx --no-install biome ci --colors=off --reporter=summary . >&2

step "generated code is up to date (buf generate)"
gen_tmp="$(mktemp -d)"
trap 'rm -rf "$gen_tmp"' EXIT
npx --no-install buf generate --template "{\"version\":\"v2\",\"plugins\":[{\"local\":\"protoc-gen-es\",\"out\":\"$gen_tmp\",\"opt\":[\"target=ts\",\"import_extension=js\"]}]}"
if ! diff -r "$gen_tmp" packages/proto/src/gen >/dev/null; then
  diff -r "$gen_tmp" packages/proto/src/gen | head -20 >&2
  die "packages/proto/src/gen is stale: run 'npm run generate' and commit the result"
fi

step "typecheck"
npm run --silent typecheck
npm run --silent check -w @nestbox/web >&2

step "server layering (no import circles, no arrow back up)"
node --import tsx scripts/check-server-imports.ts

step "generated API types are up to date (OpenAPI from the server's route schemas)"
node --import tsx scripts/gen-openapi-types.ts --check

if [ "$SKIP_IMAGE" = 0 ]; then
  step "guest image"
  "$NESTBOX_ROOT/nestbox" image build
fi

if [ "${#files[@]}" -eq 0 ]; then
  # Pure unit tests first: seconds, and a failure there stops the run before any VM boots.
  step "unit tests (test/unit)"
  node --import tsx --test --test-reporter=dot test/unit/*.test.ts >&2
  mapfile -t files < <(find test -name '*.test.ts' -not -path '*/node_modules/*' | sort)
fi
step "running ${#files[@]} test files"
log="$(mktemp)"
set +e
# A test stuck past 15 min fails (and says which) instead of holding the run to its limit.
node --import tsx --test --test-reporter=tap --test-timeout=900000 --test-concurrency="${NESTBOX_TEST_CONCURRENCY:-4}" "${files[@]}" | tee "$log"
rc="${PIPESTATUS[0]}"
set -e
pass="$(grep -E '^# pass [0-9]+' "$log" | tail -1 | awk '{print $3}')"
fail="$(grep -E '^# fail [0-9]+' "$log" | tail -1 | awk '{print $3}')"
rm -f "$log"
echo "${pass:-0} passed, ${fail:-0} failed"
exit "$rc"
