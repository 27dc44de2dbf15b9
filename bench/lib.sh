# shellcheck shell=bash
# Helpers shared by the benchmark scripts in bench/ (sourced, not run).
# The caller sets PROG (its name, for messages) and `set -euo pipefail`.

# need TOOL HINT: stop with a clear message when TOOL is not on PATH.
need() {
  command -v "$1" >/dev/null 2>&1 || { echo "$PROG: $1 not found: $2" >&2; exit 1; }
}

# on_disk DIR: stop unless DIR is on a disk file system. On tmpfs there is no
# file system work to measure and fdatasync costs nothing.
on_disk() {
  local t
  t=$(stat -f -c %T "$1")
  case $t in
    tmpfs | ramfs) echo "$PROG: $1 is on $t; set TMPDIR to a directory on a disk file system" >&2; exit 1 ;;
  esac
}

# log MESSAGE...: progress on stderr, so stdout holds only the tables.
log() { echo "$PROG: $*" >&2; }

# summarize FILE REF OURS: FILE holds one measurement a line,
#   KEY SIDE REP REQ_PER_S MB_PER_S
# (KEY without spaces; SIDE is REF or OURS; REP numbers the repetition).
# Prints, per KEY in order of first appearance, the median requests/s and
# MB/s of both sides, the ratio OURS/REF of the medians, the range of the
# ratios of the runs of one repetition (paired: they ran back to back), and
# each side's spread ((max-min)/median of requests/s) as a noise figure.
summarize() {
  awk -v ref="$2" -v ours="$3" '
    function median(list,    a, n, i, j, t) {
      n = split(list, a, " ")
      for (i = 2; i <= n; i++) {
        t = a[i] + 0
        for (j = i - 1; j >= 1 && a[j] + 0 > t; j--) a[j + 1] = a[j]
        a[j + 1] = t
      }
      lo = a[1] + 0; hi = a[n] + 0
      if (n % 2) return a[(n + 1) / 2] + 0
      return (a[n / 2] + a[n / 2 + 1]) / 2
    }
    function spread(list,    m) {
      m = median(list)
      return m > 0 ? sprintf("%3.0f%%", 100 * (hi - lo) / m) : "  -"
    }
    !($1 in seen) { seen[$1] = 1; keys[++nk] = $1 }
    {
      ops[$1, $2] = ops[$1, $2] " " $4
      mbs[$1, $2] = mbs[$1, $2] " " $5
      byrep[$1, $2, $3] = $4
      reps[$1, $3] = 1
    }
    END {
      printf "%-24s %11s %9s %11s %9s %7s %13s %7s %7s\n", "workload", ref " req/s", "MB/s", ours " req/s", "MB/s", "ratio", "ratio range", "noise " substr(ref, 1, 1), "noise " substr(ours, 1, 1)
      for (k = 1; k <= nk; k++) {
        key = keys[k]
        ro = median(ops[key, ref]); rm = median(mbs[key, ref])
        oo = median(ops[key, ours]); om = median(mbs[key, ours])
        rlo = ""; rhi = ""
        for (rk in reps) {
          split(rk, p, SUBSEP)
          if (p[1] != key || !((key, ref, p[2]) in byrep) || !((key, ours, p[2]) in byrep)) continue
          r = byrep[key, ours, p[2]] / byrep[key, ref, p[2]]
          if (rlo == "" || r < rlo) rlo = r
          if (rhi == "" || r > rhi) rhi = r
        }
        printf "%-24s %11.0f %9.1f %11.0f %9.1f %7.2f %6.2f-%-6.2f %7s %7s\n", key, ro, rm, oo, om, (ro > 0 ? oo / ro : 0), rlo, rhi, spread(ops[key, ref]), spread(ops[key, ours])
      }
    }' "$1"
}
