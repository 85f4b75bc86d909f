"""Check the relative links and #anchors in README.md, CHANGELOG.md and docs/**/*.md.

Every link that is not a URL (http, https, mailto) must name a file or directory of the
repository; an anchor must name a heading of the Markdown file it points into, spelt as
GitHub renders it (lowercase, spaces to hyphens, punctuation dropped, "-1", "-2" after
repeats). Prints each broken link as path:line and exits 1 when there is any.

Run from anywhere: python .ci/check_links.py
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from pathlib import Path
from urllib.parse import unquote

ROOT = Path(__file__).resolve().parents[1]
FENCE = re.compile(r"^\s*(```|~~~)")
HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
INLINE_CODE = re.compile(r"(`+)(.+?)\1")
# [text](target "title") and ![alt](target); the text may hold inline code.
INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_DEF = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$")
EXTERNAL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def documents() -> list[Path]:
    files = [ROOT / "README.md", ROOT / "CHANGELOG.md"]
    files += sorted((ROOT / "docs").rglob("*.md"))
    return [f for f in files if f.is_file()]


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading (before the -1, -2 of repeats)."""
    text = INLINE_CODE.sub(lambda m: m.group(2), heading)
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)  # a link: its text
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML
    text = text.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def lines_outside_code(path: Path) -> list[tuple[int, str]]:
    """The file's lines with their numbers, fenced code blocks left out."""
    kept: list[tuple[int, str]] = []
    fence: str | None = None
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        match = FENCE.match(line)
        if fence is None and match:
            fence = match.group(1)
        elif fence is not None and match and match.group(1) == fence:
            fence = None
        elif fence is None:
            kept.append((number, line))
    return kept


_anchors: dict[Path, set[str]] = {}


def anchors(path: Path) -> set[str]:
    if path not in _anchors:
        seen: Counter[str] = Counter()
        found: set[str] = set()
        for _, line in lines_outside_code(path):
            match = HEADING.match(line)
            if not match:
                continue
            base = slug(match.group(2))
            found.add(f"{base}-{seen[base]}" if seen[base] else base)
            seen[base] += 1
        _anchors[path] = found
    return _anchors[path]


def targets(line: str) -> list[str]:
    """The link targets on one line, inline code spans left out."""
    line = INLINE_CODE.sub(lambda m: " " * len(m.group(0)), line)
    found = [m.group(1) for m in INLINE_LINK.finditer(line)]
    definition = REFERENCE_DEF.match(line)
    if definition:
        found.append(definition.group(1))
    return found


def problem(source: Path, target: str) -> str | None:
    if not target or EXTERNAL.match(target):
        return None
    path_part, _, anchor = target.partition("#")
    path_part = unquote(path_part)
    if path_part:
        resolved = (
            (ROOT / path_part.lstrip("/"))
            if path_part.startswith("/")
            else (source.parent / path_part)
        )
        resolved = resolved.resolve()
        if not resolved.exists():
            return "no such file"
        if ROOT not in resolved.parents and resolved != ROOT:
            return "outside the repository"
    else:
        resolved = source
    checked = anchor and resolved.suffix == ".md" and resolved.is_file()
    if checked and unquote(anchor).lower() not in anchors(resolved):
        return f"no heading for #{anchor} in {resolved.relative_to(ROOT)}"
    return None


def main() -> int:
    broken = 0
    for source in documents():
        for number, line in lines_outside_code(source):
            for target in targets(line):
                reason = problem(source, target)
                if reason:
                    broken += 1
                    print(f"{source.relative_to(ROOT)}:{number}: {target}: {reason}")
    if broken:
        sys.stdout.flush()
        print(f"{broken} broken link(s)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
