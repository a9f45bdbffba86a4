#!/bin/sh
# Fails when a tracked file cites a page that lives outside this repository: the old
# contract page and its list of additions, milestone wording from the planning notes, or
# the research notes. The project's contract is docs/API.md; cite it, a paper (arXiv id)
# or an upstream project instead. Run by `make test` (target test-refs).
#
# The pattern is assembled from pieces so that this script does not match itself.
set -u
cd "$(dirname "$0")/.." || exit 2

if ! git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    echo "test-refs: skipped (not a git checkout)"
    exit 0
fi

pattern='\.\./sha''red|shared/''API|API-''NOTES|Done-''when|aepo-''method\.md|anchors-''rl-losses\.md|swift-''cabi-findings'

hits=$(git grep -n -E "$pattern")
status=$?
if [ "$status" -eq 0 ]; then
    echo "$hits"
    echo "test-refs: the lines above cite pages outside the repository; cite docs/API.md (by section name) instead" >&2
    exit 1
elif [ "$status" -ne 1 ]; then
    echo "test-refs: git grep failed (status $status)" >&2
    exit "$status"
fi
echo "test-refs: no citation of pages outside the repository"
