#!/usr/bin/env python3
"""dupcount.py: issue 10's count of repeated code, Go import blocks aside.

The `duplicates` tool pairs places that share six or more lines. Its README
says it passes over import lines, but it does not recognize Go's grouped
`import ( ... )` block, so two files importing the same packages in the same
order make a pair. This script reads the tool's output and sets aside every
pair where one side has at most 3 lines that are not an import, package,
blank or comment line; it counts the rest (boilerplate rows included).

    duplicates --most 200 --seconds 120 > /tmp/d.txt
    python3 scripts/dupcount.py /tmp/d.txt [--list]

Run from the repository root (the paths in the tool's rows are relative to
it). Prints "import-only: N other: M", and with --list the other rows.
"""
import re
import sys

ROW = re.compile(r'(D\d+) (\S+):(\d+)-(\d+) ~ (\S+):(\d+)-(\d+)')


def import_lines(path):
    """Line numbers of path that are package, import, blank or comment."""
    try:
        with open(path, encoding='utf-8') as f:
            lines = f.read().split('\n')
    except OSError:
        return set()
    out, in_block = set(), False
    for n, line in enumerate(lines, 1):
        t = line.strip()
        if t.startswith(('package ', 'import ', '//')) or t == '':
            out.add(n)
        if t.startswith('import ('):
            in_block = True
            continue
        if in_block:
            out.add(n)
            if t == ')':
                in_block = False
    return out


def other_lines(path, first, last):
    """How many of lines first..last of path are not import-like."""
    skip = import_lines(path)
    return sum(n not in skip for n in range(first, last + 1))


def main(argv):
    if len(argv) < 2:
        sys.exit(__doc__)
    with open(argv[1], encoding='utf-8') as f:
        rows = [line.rstrip() for line in f if line.startswith('D')]
    imports, other = 0, []
    for row in rows:
        m = ROW.match(row)
        if not m:
            continue
        a, x, y, b, u, v = m.group(2), int(m.group(3)), int(m.group(4)), m.group(5), int(m.group(6)), int(m.group(7))
        if other_lines(a, x, y) <= 3 or other_lines(b, u, v) <= 3:
            imports += 1
        else:
            other.append(row)
    print(f'import-only: {imports} other: {len(other)}')
    if '--list' in argv[2:]:
        print('\n'.join(other))


if __name__ == '__main__':
    main(sys.argv)
