#!/usr/bin/env bash
# The book in docs/ (mdBook): installs mdbook when missing (only that with --install-only), builds docs/book/ and fails on any
# warning or error mdbook prints, on a page in docs/src/ that SUMMARY.md does not list, and on a
# link or image inside the book whose file or #anchor does not exist.
set -euo pipefail
cd "$(dirname "$0")/.."

MDBOOK_VERSION=0.5.4
if [ "$(mdbook --version 2>/dev/null)" != "mdbook v$MDBOOK_VERSION" ]; then
  echo "Installing mdbook $MDBOOK_VERSION…"
  # No default features: no `serve`/`watch` (a local web server, file watching) and no
  # `search` index; `build` only, which halves the time CI spends compiling it.
  cargo install mdbook --locked --version "$MDBOOK_VERSION" --no-default-features
fi
# `--install-only`: CI installs it early, in the background, while the tests run.
[ "${1:-}" = "--install-only" ] && exit 0

# Every page in docs/src/ is in the book.
for page in docs/src/*.md; do
  name=$(basename "$page")
  [ "$name" = SUMMARY.md ] && continue
  grep -q "]($name)" docs/src/SUMMARY.md || { echo "docs: $page is not listed in docs/src/SUMMARY.md" >&2; exit 1; }
done

# mdbook logs on stderr as `LEVEL message`; any WARN or ERROR line fails the build.
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
mdbook build docs 2> "$log" || status=$?
cat "$log" >&2
if [ "$status" -ne 0 ]; then
  echo "docs: mdbook build failed (exit $status)" >&2
  exit 1
fi
if grep -Eq '^[[:space:]]*(WARN|ERROR)\b' "$log"; then
  echo "docs: mdbook printed warnings or errors (treated as errors)" >&2
  exit 1
fi

# Links inside the book: every relative href/src names a file of the built book, and every
# #fragment an id in that file (mdbook itself does not check them).
python3 - docs/book <<'PY'
import html.parser, os, sys, urllib.parse

root = sys.argv[1]

class Page(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.ids, self.links = set(), []
    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if a.get("id"):
            self.ids.add(a["id"])
        if tag == "a" and a.get("name"):
            self.ids.add(a["name"])
        for key in ("href", "src"):
            if a.get(key):
                self.links.append((tag, a[key], self.getpos()[0]))

pages = {}
for folder, _, files in os.walk(root):
    for f in files:
        if f.endswith(".html"):
            path = os.path.join(folder, f)
            p = Page()
            with open(path, encoding="utf-8") as fh:
                p.feed(fh.read())
            pages[os.path.normpath(path)] = p

broken = []
for path, page in sorted(pages.items()):
    if os.path.basename(path) == "404.html":  # served from the site root; its links are absolute
        continue
    for tag, link, line in page.links:
        url = urllib.parse.urlsplit(link)
        if url.scheme or url.netloc or link.startswith("//"):
            continue  # outside the book
        target = path if not url.path else os.path.normpath(
            os.path.join(os.path.dirname(path), urllib.parse.unquote(url.path)))
        if not os.path.exists(target):
            broken.append(f"{path}:{line}: <{tag}> {link}: no file {target}")
            continue
        frag = urllib.parse.unquote(url.fragment)
        if frag and target in pages and frag not in pages[target].ids:
            broken.append(f"{path}:{line}: <{tag}> {link}: no id \"{frag}\" in {target}")

for b in broken:
    print("docs: broken link:", b, file=sys.stderr)
if broken:
    sys.exit(1)
print(f"docs: {len(pages)} pages, every link inside the book resolves")
PY
echo "docs: built docs/book/ with no warning"
