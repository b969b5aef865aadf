"""``mtlbench new method NAME`` and ``mtlbench new benchmark NAME``: a plug-in package outside
mtlbench's tree, ready for ``pip install -e``.

The package holds one module on the interface (a working method or benchmark, with the
docstring sections of the built-ins), a ``pyproject.toml`` whose entry point registers it with
every mtlbench command and worker (:mod:`mtlbench.plugins`), a test that runs its golden values
and the conformance kit (:mod:`mtlbench.conformance`), and a README with the next commands.
The templates are the files under ``mtlbench/templates``; ``{{key}}`` marks what is filled in.

A bad name (not a lowercase identifier, or one that a built-in or an installed plug-in already
has), a folder that is not empty, or a folder inside mtlbench's own source tree is one line,
exit status 2, and nothing is written.
"""

from __future__ import annotations

import argparse
import re
import textwrap
from pathlib import Path

from mtlbench.registry import ConfigError

TEMPLATES = Path(__file__).parent / "templates"
NAME = re.compile(r"[a-z][a-z0-9_]*\Z")
WIDTH = 100  # mtlbench's own line length; the templates are written to it for short names
CODE_SPAN = re.compile(r"``[^`]+``|`[^`]+`")

# kind -> (entry-point group, summary line, names the module template imports)
KINDS: dict[str, tuple[str, str, frozenset[str]]] = {
    "method": (
        "methods",
        "Loss weights from each loss's ratio to its first value (a scaffold).",
        frozenset({"LossWeighting", "Objective", "Scale", "StepContext", "Choice", "Tensor"}),
    ),
    "benchmark": (
        "benchmarks",
        "two regression tasks from one .npz file (a scaffold)",
        frozenset({"Benchmark", "Evaluator", "Metric", "Protocol", "Split", "Path", "Tensor"}),
    ),
}


def class_name(name: str, kind: str) -> str:
    """``my_method`` -> ``MyMethod``; ``Kind`` appended where the plain name would shadow a name
    the module imports (``objective`` -> ``ObjectiveMethod``)."""
    plain = "".join(part.capitalize() for part in name.split("_") if part)
    taken = KINDS[kind][2] | {"MeanSquaredError"}
    return plain + kind.capitalize() if plain in taken else plain


def _registered(kind: str) -> list[str]:
    """The names a built-in or an installed plug-in already has (both registries load them)."""
    if kind == "method":
        from mtlbench.method import names

        return names()
    from mtlbench.benchmark import names as benchmark_names

    return benchmark_names()


def _source_tree() -> Path | None:
    """mtlbench's own checkout, when this is an editable install (its ``pyproject.toml``)."""
    root = Path(__file__).resolve().parents[1]
    project = root / "pyproject.toml"
    if project.is_file() and 'name = "mtlbench"' in project.read_text():
        return root
    return None


def _check(kind: str, name: str, folder: Path) -> None:
    if not NAME.match(name):
        raise ConfigError(
            f"{name!r} is not a {kind} name: use lowercase letters, digits and _, starting with "
            "a letter (it is the registry name, the module name and the entry point)"
        )
    if name in _registered(kind):
        raise ConfigError(
            f"the {kind} name {name!r} is taken (a built-in or an installed plug-in has it; "
            f"`mtlbench list {kind}s` shows them): choose another name"
        )
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise ConfigError(f"{folder} exists and is not an empty folder: give another --dir")
    tree = _source_tree()
    if tree is not None and folder.resolve().is_relative_to(tree):
        raise ConfigError(
            f"{folder} is inside mtlbench's own source tree ({tree}): a plug-in lives outside "
            f"it (give --dir ../{folder.name}); a built-in {kind} is one module under "
            f"{'methods' if kind == 'method' else 'datasets'}/ instead"
        )


def _render(template: str, values: dict[str, str]) -> str:
    text = (TEMPLATES / template).read_text()
    for key, value in values.items():
        text = text.replace("{{" + key + "}}", value)
    leftover = re.search(r"\{\{\w+\}\}", text)
    if leftover:  # a template names a key nobody fills: mtlbench's bug, not the user's
        raise RuntimeError(f"template {template} has the unfilled key {leftover.group(0)}")
    return text if template.endswith(".md.tmpl") else reflow(text)


def _prose(indent: str, body: str, docstring_indent: str | None) -> str | None:
    """The prefix of a prose line (``indent`` + ``body``): its indent, plus ``# `` for a
    whole-line comment; inside a docstring (``docstring_indent`` is its opening line's indent),
    a line at that indent. None for code, a blank line, a list item, a literal block (indented
    deeper) or closing quotes."""
    if body.startswith("# "):
        return indent + "# "
    if indent == docstring_indent and body and body != '"""' and not body.startswith(("- ", "* ")):
        return indent
    return None


def reflow(text: str, width: int = WIDTH) -> str:
    """Re-wrap each prose paragraph (whole-line comments, docstring lines) that holds a line
    longer than ``width``: a long plug-in name, filled into a template, lengthens the lines it
    lands on. Paragraphs are runs of lines with the same prefix; code, blank lines, list items
    and the literal blocks of docstrings end them and are never changed. Words and inline
    literals are never split, so one longer than ``width`` stays whole."""
    out: list[str] = []
    paragraph: list[str] = []
    prefix: str | None = None
    docstring: str | None = None  # the open docstring's indent

    def flush() -> None:
        if paragraph and max(map(len, paragraph)) > width:
            words = " ".join(line[len(prefix) :].strip() for line in paragraph)
            # an inline literal (``...`` or `...`) stays on one line: its spaces are held
            words = CODE_SPAN.sub(lambda m: m.group(0).replace(" ", "\0"), words)
            wrapped = textwrap.wrap(
                words, width, initial_indent=prefix, subsequent_indent=prefix,
                break_long_words=False, break_on_hyphens=False,
            )  # fmt: skip
            out.extend(line.replace("\0", " ") for line in wrapped)
        else:
            out.extend(paragraph)
        paragraph.clear()

    for line in text.split("\n"):
        body = line.lstrip()
        indent = line[: len(line) - len(body)]
        opens = docstring is None and body.startswith('"""')
        here = _prose(indent, body, indent if opens else docstring)
        if here is None or here != prefix or opens:
            flush()
            prefix = here
        (out if here is None else paragraph).append(line)
        if line.count('"""') % 2 == 1:
            docstring = None if docstring is not None else indent
        if docstring is None and line.rstrip().endswith('"""'):
            flush()
            prefix = None
    flush()
    return "\n".join(out)


def new_project(kind: str, name: str, folder: str | Path | None = None) -> list[Path]:
    """Write the plug-in package of a new ``kind`` (``"method"`` or ``"benchmark"``) named
    ``name`` into ``folder`` (default ``./mtlbench-<name>``); returns the files written.
    Raises :class:`~mtlbench.registry.ConfigError`, writing nothing, for a bad name or folder."""
    if kind not in KINDS:
        raise ConfigError(f"unknown kind {kind!r}. Valid: {', '.join(KINDS)}")
    dist = "mtlbench-" + name.replace("_", "-")
    target = Path(folder) if folder is not None else Path(dist)
    _check(kind, name, target)
    group, summary, _ = KINDS[kind]
    package = f"mtlbench_{name}"
    values = {
        "kind": kind,
        "name": name,
        "class": class_name(name, kind),
        "dist": dist,
        "package": package,
        "group": group,
        "summary": summary,
    }
    files = {
        "pyproject.toml": "pyproject.toml.tmpl",
        "README.md": f"{kind}/README.md.tmpl",
        f"{package}/__init__.py": "init.py.tmpl",
        f"{package}/{name}.py": f"{kind}/module.py.tmpl",
        f"tests/test_{name}.py": f"{kind}/test.py.tmpl",
    }
    rendered = {target / rel: _render(template, values) for rel, template in files.items()}
    for path, text in rendered.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return list(rendered)


def cmd_new(args: argparse.Namespace) -> int:
    written = new_project(args.kind, args.name, args.dir)
    folder = written[0].parent
    check = f"mtlbench check {args.kind} {args.name}" + (
        " --fixture" if args.kind == "benchmark" else ""
    )
    print(f"created {folder}/ (the {args.kind} {args.name}), {len(written)} files; next:")
    print(f"  pip install -e {folder}      # registers {args.name} with every mtlbench command")
    print(f"  {check}")
    print(f"  pytest {folder}")
    return 0


def add_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("new", help="a plug-in package for your own method or benchmark")
    p.add_argument("kind", choices=sorted(KINDS), help="what the package registers")
    p.add_argument("name", help="its registry name (lowercase letters, digits, _)")
    p.add_argument("--dir", help="the package folder (default ./mtlbench-<name>)")
    p.set_defaults(handler=cmd_new)
