#!/bin/sh
# Runs tokenizer_oracle.js with the node that CMake found; fails with a clear hint when it is missing.
# usage: sh tokenizer_oracle.sh NODE_EXECUTABLE ARGS_FOR_tokenizer_oracle.js...
node="$1"
shift
case "$node" in
  "" | *-NOTFOUND)
    echo "tokenizer_oracle: node (Node.js) was not found when CMake configured;" \
         "run scripts/setup.sh, then re-run cmake" >&2
    exit 1 ;;
esac
if [ ! -x "$node" ]; then
  echo "tokenizer_oracle: $node is not executable; run scripts/setup.sh, then re-run cmake" >&2
  exit 1
fi
exec "$node" "$(dirname "$0")/tokenizer_oracle.js" "$@"
