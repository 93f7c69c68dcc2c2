# usage.sh — sourced by the bash scripts in scripts/ for -h/--help. Their help text is their header comment.

# usage FILE: FILE's header comment (after the #! line) without its "# ", up to the first non-comment line.
usage() {
  awk 'NR == 1 && /^#!/ { next } /^#/ { sub(/^# ?/, ""); print; next } { exit }' "$1"
}

# help_or_continue FILE ARGS...: prints the usage of FILE and exits 0 when an argument before any `--` is
# -h or --help; otherwise returns, having done nothing.
help_or_continue() {
  local file="$1" arg
  shift
  for arg in "$@"; do
    [[ "$arg" == -- ]] && return 0
    if [[ "$arg" == -h || "$arg" == --help ]]; then
      usage "$file"
      exit 0
    fi
  done
}

# bad_usage NAME MESSAGE: the error for a wrong argument (exit 2).
bad_usage() {
  echo "$1: $2 (see $1 --help)" >&2
  exit 2
}
