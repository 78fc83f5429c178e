"""One self-contained report page: sections of text, tables, charts and links, rendered to Markdown
tables and to a single HTML file (inline CSS, charts embedded as base64 PNG, no script, no network).

Both `instructkit run` and `instructkit eval report|compare` describe their report as `Section`s, so
the Markdown and the HTML show the same tables. Jinja autoescaping is on: task names and recipe text
come from user files.
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass, field
from pathlib import Path

import jinja2

from ..atomic import write_atomic


@dataclass
class Table:
    """A table; `numeric` columns align right, `marks` colours a row ('up' / 'down': significant)."""

    columns: list[str]
    rows: list[list[str]]
    numeric: frozenset[int] = frozenset()
    marks: list[str] = field(default_factory=list)
    caption: str = ""

    def markdown(self) -> str:
        """The table in GitHub Markdown (pipes in cells escaped)."""
        align = ["---:" if i in self.numeric else "---" for i in range(len(self.columns))]
        lines = [_md_row(self.columns), "|" + "|".join(align) + "|"]
        lines += [_md_row(row) for row in self.rows]
        return "\n".join(lines) + "\n"


@dataclass
class Section:
    """A titled part of the page; each field is optional and shown in this order."""

    title: str
    text: list[str] = field(default_factory=list)
    code: str = ""
    code_label: str = ""  # when set, the HTML folds the code under this label (<details>, no script)
    tables: list[Table] = field(default_factory=list)
    charts: list[tuple[str, Path]] = field(default_factory=list)  # (alt text, PNG file)
    items: list[tuple[str, str]] = field(default_factory=list)  # (bold lead, rest of the sentence)
    links: list[tuple[str, Path]] = field(default_factory=list)  # (label, file or folder)


def _md_row(cells: list[str]) -> str:
    return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"


def render_markdown(title: str, sections: list[Section], subtitle: str = "", base: Path | None = None) -> str:
    """The page as Markdown; chart and link paths relative to `base` (the folder the file goes in)."""
    lines = [f"# {title}", ""] + ([subtitle.strip(), ""] if subtitle.strip() else [])
    for s in sections:
        lines += [f"## {s.title}", ""]
        for paragraph in s.text:
            lines += [paragraph, ""]
        if s.code:
            lines += ["```yaml", s.code.rstrip(), "```", ""]
        for table in s.tables:
            lines += ([table.caption, ""] if table.caption else []) + [table.markdown()]
        lines += [f"![{alt}]({_href(p, base)})" for alt, p in s.charts if p.is_file()]
        lines += [f"- **{lead}** {rest}" for lead, rest in s.items]
        lines += [f"- [{label}]({_href(p, base)})" for label, p in s.links if p.exists()]
        if s.charts or s.items or s.links:
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def write_html(path: Path, title: str, sections: list[Section], subtitle: str = "") -> Path:
    """Write the page to `path`; links are made relative to its folder, charts are embedded."""
    path.parent.mkdir(parents=True, exist_ok=True)
    html = render_html(title, sections, subtitle, base=path.parent)
    write_atomic(path, html)
    return path


def render_html(title: str, sections: list[Section], subtitle: str = "", base: Path | None = None) -> str:
    """The page as one HTML string."""
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    drawn = [[(alt, p) for alt, p in s.charts if p.is_file()] for s in sections]
    ids = iter(range(1, 1 + sum(len(d) for d in drawn)))
    views = [
        {
            "section": s,
            "charts": [(f"chart-{next(ids)}", alt, _data_uri(p)) for alt, p in charts],
            "links": [(label, _href(p, base)) for label, p in s.links if p.exists()],
        }
        for s, charts in zip(sections, drawn)
    ]
    return env.from_string(PAGE).render(title=title, subtitle=subtitle, views=views)


def _data_uri(png: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode("ascii")


def _href(target: Path, base: Path | None) -> str:
    """A relative link from the page's folder (absolute when there is no common root)."""
    if base is None:
        return target.resolve().as_uri()
    try:
        rel = os.path.relpath(target.resolve(), base.resolve())
    except ValueError:  # another drive (Windows)
        return target.resolve().as_uri()
    return rel.replace(os.sep, "/") + ("/" if target.is_dir() else "")


PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ title }}</title>
<style>
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1d2330;
       max-width: 1100px; margin: 2em auto; padding: 0 1.5em; }
h1 { font-size: 1.7em; margin-bottom: .2em; }
h2 { font-size: 1.25em; border-bottom: 1px solid #d8dde6; padding-bottom: .2em; margin-top: 1.8em; }
.subtitle { color: #4b5563; margin-top: 0; }
table { border-collapse: collapse; margin: .8em 0; font-size: 13.5px; }
caption { text-align: left; color: #4b5563; padding-bottom: .3em; }
th, td { border: 1px solid #d8dde6; padding: .25em .6em; }
th { background: #f1f4f9; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td:not(:first-child) { white-space: nowrap; }  /* verdicts read on one line; wide tables scroll */
td:first-child { overflow-wrap: anywhere; min-width: 12em; }  /* long task names wrap instead */
.scroll { overflow-x: auto; }
tr.up td { background: #e6f4ea; }
tr.down td { background: #fdecea; }
img { max-width: 100%; border: 1px solid #e5e7eb; margin: .5em 0; }
figure.chart { margin: .5em 0; }
figure.chart img { cursor: zoom-in; }
figcaption { color: #4b5563; font-size: 13px; }
figure.chart a.close { display: none; }
/* a chart opens full size on click with no script: its link targets the figure, which then fills the window */
figure.chart:target { position: fixed; inset: 0; margin: 0; padding: 2.5em 1em 1em; overflow: auto;
                      background: rgba(255, 255, 255, .98); z-index: 10; }
figure.chart:target img { max-width: none; cursor: default; }
figure.chart:target a.close { display: block; position: fixed; top: .6em; right: 1.2em; }
pre { background: #f6f8fa; padding: .8em; overflow-x: auto; font-size: 12.5px; }
li { margin: .25em 0; }
summary { cursor: pointer; color: #1f4e99; }
</style>
</head>
<body>
<h1>{{ title }}</h1>
{% if subtitle %}<p class="subtitle">{{ subtitle }}</p>{% endif %}
{% for v in views %}{% set s = v.section %}
<section>
<h2>{{ s.title }}</h2>
{% for p in s.text %}<p>{{ p }}</p>
{% endfor %}
{% if s.code and s.code_label %}<details><summary>{{ s.code_label }}</summary><pre>{{ s.code }}</pre></details>
{% elif s.code %}<pre>{{ s.code }}</pre>{% endif %}
{% for t in s.tables %}
<div class="scroll"><table>
{% if t.caption %}<caption>{{ t.caption }}</caption>{% endif %}
<thead><tr>{% for c in t.columns %}<th>{{ c }}</th>{% endfor %}</tr></thead>
<tbody>
{% for row in t.rows %}{% set mark = t.marks[loop.index0] if loop.index0 < t.marks|length else "" %}
<tr{% if mark %} class="{{ mark }}"{% endif %}>{% for cell in row %}<td{% if loop.index0 in t.numeric %} class="num"{% endif %}>{{ cell }}</td>{% endfor %}</tr>
{% endfor %}
</tbody>
</table></div>
{% endfor %}
{% for id, alt, uri in v.charts %}<figure class="chart" id="{{ id }}"><a href="#{{ id }}" title="open full size"><img alt="{{ alt }}" src="{{ uri }}"></a>
<figcaption>{{ alt }} (click to open full size)</figcaption><a class="close" href="#close">close ✕</a></figure>
{% endfor %}
{% if s.items %}<ul>
{% for lead, rest in s.items %}<li><strong>{{ lead }}</strong> {{ rest }}</li>
{% endfor %}</ul>{% endif %}
{% if v.links %}<ul>
{% for label, href in v.links %}<li><a href="{{ href }}">{{ label }}</a></li>
{% endfor %}</ul>{% endif %}
</section>
{% endfor %}
</body>
</html>
"""
