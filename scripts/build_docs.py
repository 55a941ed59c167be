"""Build the documentation site in `_docs/` from the notebooks in `nbs/`, offline and without executing them.

Quarto cannot be installed here: its PyPI package (`quarto-cli`) is a source distribution that downloads the
Quarto binaries from GitHub while it builds, and no registry this project reaches has them. So this script
keeps nbdev's own notebook processing (the same processors `nbdev-docs` runs: front matter, `#| hide`,
`show_doc` cells added after every export, ...) and renders the processed notebooks to static HTML itself.

One change to nbdev's processors: `exec_show_docs` would run every exported cell and import of each notebook
in a kernel. Here the `show_doc` cells are evaluated against the exported package instead (`s3lib.<module>`,
imported once), so no notebook code runs. A `show_doc` of a name the package does not export is left out
with a warning.

Pages: `nbs/index.qmd` -> `index.html`, `nbs/NN_name.ipynb` -> `name.html` (nbdev's own naming).
"""
import html, importlib, re, shutil, sys, time, warnings
from pathlib import Path

import yaml
from markdown_it import MarkdownIt
from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import PythonLexer

from fastcore.nbio import read_nb
from nbdev.config import get_config, nbpath2html
from nbdev.process import NBProcessor, Processor
from nbdev.processors import FilterDefaults, exec_show_docs
from nbdev.showdoc import show_doc

md = MarkdownIt("commonmark", {"html": True}).enable("table")
_fmt = HtmlFormatter(cssclass="hl")
_re_fm = re.compile(r"^---\n(.*?)\n---\n?", re.S)
_re_default_exp = re.compile(r"^#\|\s*default_exp\s+(\S+)", re.M)
_re_showdoc = re.compile(r"^\s*show_doc\((.*)\)\s*$", re.S)


def _one_line_description(nb):
    "nbdev reads only the first line of a `> description` under the title and drops the rest: join its lines first."
    for cell in nb.cells:
        if cell.cell_type != "markdown": continue
        lines = cell.source.splitlines()
        if lines and lines[0].startswith("# "):
            i = next((i for i, l in enumerate(lines) if l.startswith(">")), None)
            if i is not None:
                j = i
                while j + 1 < len(lines) and lines[j + 1].startswith(">"): j += 1
                desc = " ".join(l.lstrip("> ").strip() for l in lines[i:j + 1])
                cell.source = "\n".join(lines[:i] + ["> " + desc] + lines[j + 1:])
        return


def _default_exp(path):
    for cell in read_nb(path).cells:
        if cell.cell_type == "code" and (m := _re_default_exp.search(cell.source)): return m.group(1)


class show_doc_from_package(Processor):
    "Stands where `exec_show_docs` stood: render `show_doc(...)` cells from the exported module, run nothing else."
    def begin(self):
        mod = getattr(self.nb, "module_", None)
        self.ns = dict(vars(importlib.import_module(f"{self.nb.lib_}.{mod}"))) if mod else {}
        self.ns["show_doc"] = show_doc

    def __call__(self, cell):
        if cell.cell_type != "code" or not cell.source: return
        body = "\n".join(l for l in cell.source.splitlines() if not l.startswith("#|"))
        if not (m := _re_showdoc.match(body)): return
        try: res = eval(f"show_doc({m.group(1)})", self.ns)
        except Exception as e:
            warnings.warn(f"{self.nb.path_}: `{body.strip()}` left out ({type(e).__name__}: {e})")
            cell.source = ""
            return
        cell.outputs = [{"output_type": "display_data", "metadata": {},
                         "data": {"text/markdown": res._repr_markdown_()}}]
        cell.source = "#| echo: false\n#| output: asis\n" + body


class NoExecDefaults(FilterDefaults):
    def base_procs(self):
        return [show_doc_from_package if p is exec_show_docs else p for p in super().base_procs()]


def _directives(src):
    d = {}
    for l in src.splitlines():
        if l.startswith("#|") and ":" in l:
            k, v = l[2:].split(":", 1)
            d[k.strip()] = v.strip().lower()
    return d


def _code(src):
    src = "\n".join(l for l in src.splitlines() if not l.startswith("#|")).strip("\n")
    return highlight(src, PythonLexer(), _fmt) if src.strip() else ""


def _output(o):
    if o.get("output_type") == "stream": return f"<pre class='out'>{html.escape(''.join(o.get('text', '')))}</pre>"
    data = o.get("data", {})
    j = lambda v: "".join(v) if isinstance(v, list) else v
    if "text/markdown" in data: return md.render(j(data["text/markdown"]))
    if "text/html" in data: return j(data["text/html"])
    for t in ("image/png", "image/jpeg"):
        if t in data: return f"<img src='data:{t};base64,{j(data[t]).strip()}'>"
    if "text/plain" in data: return f"<pre class='out'>{html.escape(j(data['text/plain']))}</pre>"
    if o.get("output_type") == "error": return f"<pre class='out'>{html.escape(o.get('ename', ''))}: {html.escape(o.get('evalue', ''))}</pre>"
    return ""


def render_nb(nb):
    "HTML body of a processed notebook and its front matter."
    fm, parts = {}, []
    for cell in nb.cells:
        src = cell.get("source") or ""
        if cell.cell_type == "raw" and (m := _re_fm.match(src)): fm.update(yaml.safe_load(m.group(1)) or {}); continue
        if cell.cell_type == "markdown": parts.append(md.render(src)); continue
        if cell.cell_type != "code": continue
        d = _directives(src)
        if d.get("include") == "false": continue
        if d.get("echo") != "false" and (c := _code(src)): parts.append(c)
        if d.get("output") != "false": parts += [_output(o) for o in cell.get("outputs", [])]
    return fm, "\n".join(p for p in parts if p)


CSS = """body{margin:0;font:16px/1.55 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;color:#222;display:flex}
nav{width:15rem;flex:none;padding:1.2rem;border-right:1px solid #ddd;min-height:100vh;background:#fafafa;box-sizing:border-box}
nav a{display:block;color:#245;text-decoration:none;padding:.15rem 0}nav a.cur{font-weight:600}nav h2{font-size:1.1rem;margin:.2rem 0 1rem}
main{max-width:56rem;padding:1.2rem 2rem;min-width:0}pre,code{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.9em}
pre{background:#f5f5f5;padding:.7rem;overflow-x:auto;border-radius:4px}pre.out{background:#fff;border-left:3px solid #ccc}
table{border-collapse:collapse}td,th{border:1px solid #ddd;padding:.25rem .5rem;text-align:left}img{max-width:100%}
p.desc{color:#555;font-size:1.1rem}"""


def page(title, desc, body, nav):
    d = f"<p class='desc'>{md.renderInline(desc)}</p>" if desc else ""
    return (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><meta name='viewport' content='width=device-width'>"
            f"<title>{html.escape(title)} – s3lib</title><link rel='stylesheet' href='styles.css'></head>"
            f"<body>{nav}<main><h1>{html.escape(title)}</h1>{d}{body}</main></body></html>")


def main():
    t0 = time.time()
    cfg = get_config()
    sys.path.insert(0, str(cfg.config_path))  # document this checkout's package, whichever venv runs the script
    nbs, out = cfg.nbs_path, cfg.doc_path
    pages = []  # (output name, title, description, body html)
    index = nbs/"index.qmd"
    if index.exists():
        text = index.read_text()
        m = _re_fm.match(text)
        fm = yaml.safe_load(m.group(1)) if m else {}
        pages.append(("index.html", fm.get("title", cfg.lib_name), fm.get("description", ""), md.render(text[m.end() if m else 0:])))
    for path in sorted(nbs.glob("[0-9]*.ipynb")):
        nb = read_nb(path)
        nb.module_, nb.lib_ = _default_exp(path), cfg.lib_path.name
        _one_line_description(nb)
        NoExecDefaults()(nb)
        fm, body = render_nb(nb)
        pages.append((nbpath2html(path).name, fm.get("title", path.stem), fm.get("description", ""), body))

    names = [p[0] for p in pages]
    if len(set(names)) != len(names): sys.exit(f"two notebooks map to the same page: {names}")
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    (out/"styles.css").write_text(CSS + "\n" + _fmt.get_style_defs(".hl"))
    for name, title, desc, body in pages:
        links = "".join(f"<a href='{n}'{' class=cur' if n == name else ''}>{html.escape(t)}</a>" for n, t, _, _ in pages)
        nav = f"<nav><h2><a href='index.html'>{html.escape(cfg.lib_name)}</a></h2>{links}</nav>"
        # links between notebooks (`[core](00_core.ipynb)`) point at their pages
        body = re.sub(r'href="(?:\./)?([^"/:]+)\.ipynb(#[^"]*)?"', lambda m: f'href="{nbpath2html(m.group(1) + ".ipynb").name}{m.group(2) or ""}"', body)
        (out/name).write_text(page(title, desc, body, nav))
    print(f"{len(pages)} pages in {out} ({time.time() - t0:.1f} s)")


if __name__ == "__main__":
    main()
