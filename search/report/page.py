"""The report's HTML and CSV output.

One self-contained page: inline CSS, PNG images beside it (relative links),
tables, and a small inline script that records JavaScript errors and how many
images loaded (`data-images-loaded` / `data-images-total` on <body>, errors in
#js-errors), so a headless browser can check the page. No external resources.
"""

from __future__ import annotations

import csv
import hashlib
import html
import math
import re
import struct
from pathlib import Path

CSS = """
body { font-family: sans-serif; margin: 1.5em auto; max-width: 1100px; color: #222;
       line-height: 1.4; padding: 0 1em; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; border-bottom: 1px solid #ccc; margin-top: 2em; }
table { border-collapse: collapse; font-size: 0.8em; margin: 0.6em 0; }
th, td { border: 1px solid #ccc; padding: 2px 6px; text-align: right; }
th { background: #f0f0f0; } td.text, th.text { text-align: left; }
img { max-width: 100%; height: auto; display: block; margin: 0.6em 0; }
.note { color: #555; font-size: 0.9em; } .absent { color: #888; font-style: italic; }
.warn { color: #b00; } pre { background: #f6f6f6; padding: 0.6em; font-size: 0.8em;
       overflow-x: auto; } details { margin: 0.5em 0; } #js-errors:empty { display: none; }
.gallery { display: flex; flex-wrap: wrap; gap: 0.5em; } .gallery figure { margin: 0; }
figcaption { font-size: 0.8em; color: #555; }
"""

SCRIPT = """
window.reportErrors = [];
function reportError(text) {
  window.reportErrors.push(text);
  document.documentElement.setAttribute('data-js-errors', String(window.reportErrors.length));
  var box = document.getElementById('js-errors');
  if (box) { box.textContent = window.reportErrors.join('\\n'); }
}
window.onerror = function (message, source, line) {
  reportError(String(message) + ' (' + source + ':' + line + ')');
};
window.addEventListener('error', function (event) {
  var target = event.target;
  if (target && target.tagName === 'IMG') { reportError('image failed: ' + target.src); }
}, true);
window.addEventListener('load', function () {
  var images = document.images, loaded = 0;
  for (var i = 0; i < images.length; i++) {
    if (images[i].complete && images[i].naturalWidth > 0) { loaded++; }
  }
  document.body.dataset.imagesLoaded = String(loaded);
  document.body.dataset.imagesTotal = String(images.length);
});
"""


_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_+-]*(\.[A-Za-z0-9_+-]+)*")


def safe_name(text, max_length: int = 64) -> str:
  """`text` as a file name that stays inside its folder, whatever a store holds.

  Store contents are data (a method name, an exp_id, a sweep name may be
  anything in a crafted or damaged store), so a name built from them must not
  carry a path separator, "..", a leading dot or control characters. A plain
  name (letters, digits, `_ + - .`, no empty or leading dot part, at most
  `max_length` characters) is kept as it is; anything else becomes its plain
  characters plus a short hash of the original, so two different texts never
  share a file.
  """
  text = str(text)
  if len(text) <= max_length and _SAFE_NAME.fullmatch(text):
    return text
  stem = re.sub(r"[^A-Za-z0-9_+-]+", "_", text).strip("_")[: max_length - 9] or "name"
  return f"{stem}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"


def fmt(value) -> str:
  """A cell: ints as ints, floats to 4 significant digits, nan/None as an en dash."""
  if value is None or (isinstance(value, float) and math.isnan(value)):
    return "\u2013"
  if isinstance(value, float):
    if math.isinf(value):
      return "\u221e"
    return str(int(value)) if value.is_integer() and abs(value) >= 1 else f"{value:.4g}"
  return str(value)


def percent(value) -> str:
  if value is None or (isinstance(value, float) and math.isnan(value)):
    return "\u2013"
  return f"{100 * value:.2f}%"


def table(rows, columns) -> str:
  """An HTML table. columns: [(key, header)] or [(key, header, formatter)]."""
  if not rows:
    return '<p class="absent">(no rows)</p>'
  spec = [(c[0], c[1], c[2] if len(c) > 2 else fmt) for c in columns]
  head = "".join(
    f'<th class="{"text" if isinstance(rows[0].get(k), str) else ""}">{html.escape(h)}</th>'
    for k, h, _ in spec
  )
  body = []
  for row in rows:
    cells = "".join(
      f'<td class="{"text" if isinstance(row.get(k), str) else ""}">'
      f"{html.escape(f(row.get(k)))}</td>"
      for k, _, f in spec
    )
    body.append(f"<tr>{cells}</tr>")
  return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def png_size(path) -> tuple[int, int]:
  """(width, height) in pixels from a PNG's header."""
  with open(path, "rb") as handle:
    header = handle.read(24)
  return struct.unpack(">II", header[16:24])


def image(out: Path, src: str, alt: str, width: int) -> str:
  """An <img> for out/src, shown at most `width` pixels wide (never enlarged)."""
  width = min(int(width), png_size(out / src)[0])
  return f'<img src="{html.escape(src)}" alt="{html.escape(alt)}" width="{width}">'


def paragraph(text: str, kind: str = "note") -> str:
  return f'<p class="{kind}">{html.escape(text)}</p>'


def absent(text: str) -> str:
  """The one line a section shows when its data are absent."""
  return paragraph(text, "absent")


def collapsed(summary: str, body: str) -> str:
  return f"<details><summary>{html.escape(summary)}</summary>{body}</details>"


def csv_link(name: str) -> str:
  return f'<p class="note">CSV: <a href="{html.escape(name)}">{html.escape(name)}</a></p>'


def render(title: str, intro: str, sections) -> str:
  """The whole page. sections: [(anchor, heading, body html)]."""
  toc = "".join(f'<li><a href="#{a}">{html.escape(h)}</a></li>' for a, h, _ in sections)
  parts = [
    f'<section id="{a}"><h2>{html.escape(h)}</h2>{body}</section>' for a, h, body in sections
  ]
  return (
    "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
    f"<title>{html.escape(title)}</title><style>{CSS}</style>"
    f"<script>{SCRIPT}</script></head>\n<body>"
    f"<h1>{html.escape(title)}</h1>{intro}"
    f"<pre id=\"js-errors\" class=\"warn\"></pre>"
    f"<ul>{toc}</ul>{''.join(parts)}</body></html>\n"
  )


def write_csv(path, rows, columns=None) -> Path:
  """Write dict rows as CSV (columns: every key of any row, in first-seen order, unless
  given: rows of different kinds, e.g. the search's and a method's, keep all columns)."""
  path = Path(path)
  columns = list(columns or dict.fromkeys(key for row in rows for key in row))
  with path.open("w", newline="") as handle:
    writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
      writer.writerow({k: _csv_value(row.get(k)) for k in columns})
  return path


def _csv_value(value):
  """nan and None as empty cells."""
  if value is None or (isinstance(value, float) and math.isnan(value)):
    return ""
  return value
