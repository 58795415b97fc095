#!/usr/bin/env bash
# Prints the path of a CPython 3.12 interpreter: pyenv's own build first
# (its shims answer even where no 3.12 is selected), then python3.12 on
# PATH. Fails, naming the caller ($1), when there is none.
set -euo pipefail
for candidate in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.12*/bin/python3.12 python3.12; do
    if "$candidate" -c 'import sys; assert sys.version_info[:2] == (3, 12)' > /dev/null 2>&1; then
        echo "$candidate"
        exit 0
    fi
done
echo "${1:-find_python312.sh}: CPython 3.12 not found (neither in pyenv's versions nor python3.12 on PATH)" >&2
exit 1
