"""Every code block of the README, the docs, the model cards and examples/README.md runs here, so no example drifts
from the code.

One test per page, in its own copy of the sandbox folder (`doc_sandbox.py`: one-layer models of the real widths,
sample clips, label tables...). `python` blocks run in order in one namespace, as in a notebook (in one Python
process per page); `bash` blocks run with `bash -euo pipefail` in the same folder. A statement whose comment starts
with a tuple of ints (`out.pooler_output  # (1, 768)`) must have that shape. Blocks of data and output are tagged
with one of `DATA_TAGS` and not run; an untagged block or another tag fails.

A comment right before a block changes how it runs, visibly in the page's source:
`<!-- snippet: skip (why) -->` (the skipped blocks must be exactly `EXPECTED_SKIPS`), or
`<!-- snippet: replace "old" "new" (why) -->`: `old` must occur in the block.
"""

from __future__ import annotations

import ast
import io
import json
import os
import re
import shlex
import subprocess
import sys
import textwrap
import time
import tokenize
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import doc_sandbox
from doc_sandbox import REPO

RUN_TAGS = ("python", "bash")
DATA_TAGS = ("text", "json", "jsonl", "csv", "yaml", "toml", "bibtex", "mermaid")
# (page, reason) of every skipped block: adding a skip is a decision made here.
EXPECTED_SKIPS = {
    ("docs/downstream.md", "a benchmark of 20 to 73 minutes; tests/benchmarks are not run by the suite"),
    ("docs/pretraining.md", "FSDP needs GPUs, as the text says"),
    ("docs/pretraining.md", "the evidence run, 11 to 16 minutes on two cores"),
    ("docs/tasks.md", "needs the FaceForensics++ release, given by its authors on request"),
    ("docs/tasks.md", "needs the RAVDESS release, which cannot be shipped"),
    ("docs/tasks.md", "needs the CMU-MOSEI release, which cannot be shipped"),
}
BLOCK_TIMEOUT = 600  # seconds, one block


def pages() -> list[str]:
    found = ["README.md", *sorted(str(p.relative_to(REPO)) for p in (REPO / "docs").rglob("*.md"))]
    found += sorted(str(p.relative_to(REPO)) for p in (REPO / "model_cards").glob("*.md"))
    found += ["examples/README.md"]
    return [page for page in found if (REPO / page).exists()]


@dataclass
class Block:
    page: str
    line: int  # of the opening fence, 1-based
    tag: str
    code: str
    skip: str | None = None
    replacements: list[tuple[str, str]] = field(default_factory=list)

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"


FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>[^`]*)$")
DIRECTIVE = re.compile(r"^\s*<!--\s*snippet:\s*(?P<body>.*?)\s*-->\s*$")


def parse_directive(body: str, where: str) -> tuple[str, list[str], str | None]:
    """`skip (why)` or `replace "old" "new" (why)` -> (verb, arguments, reason)."""
    reason = None
    match = re.fullmatch(r"(?P<head>.*?)\s*\((?P<reason>[^()]*)\)", body)
    if match:
        body, reason = match.group("head"), match.group("reason")
    words = shlex.split(body)
    if not words or words[0] not in ("skip", "replace"):
        raise ValueError(f"{where}: unknown snippet directive {body!r} (skip or replace)")
    if words[0] == "skip" and (len(words) != 1 or not reason):
        raise ValueError(f"{where}: write `snippet: skip (why)`")
    if words[0] == "replace" and len(words) != 3:
        raise ValueError(f'{where}: write `snippet: replace "old" "new" (why)`')
    return words[0], words[1:], reason


def read_blocks(page: str) -> list[Block]:
    lines = (REPO / page).read_text(encoding="utf-8").split("\n")
    blocks, index = [], 0
    while index < len(lines):
        match = FENCE.match(lines[index])
        if not match:
            index += 1
            continue
        indent, fence = match.group("indent"), match.group("fence")
        block = Block(page, index + 1, match.group("info").strip(), "")
        directive_line = index - 1
        while directive_line >= 0 and DIRECTIVE.match(lines[directive_line]):
            verb, args, reason = parse_directive(DIRECTIVE.match(lines[directive_line]).group("body"), block.where)
            if verb == "skip":
                block.skip = reason
            else:  # read upwards: the first directive is applied first
                block.replacements.insert(0, (args[0], args[1]))
            directive_line -= 1
        body, index = [], index + 1
        while index < len(lines) and not (
            lines[index].strip().startswith(fence[0] * len(fence)) and not lines[index].strip().strip(fence[0])
        ):
            line = lines[index]
            body.append(line[len(indent) :] if line.startswith(indent) else line.lstrip())
            index += 1
        block.code = "\n".join(body) + "\n"
        for old, new in block.replacements:
            assert old in block.code, f"{block.where}: the directive's text {old!r} is not in the block"
            block.code = block.code.replace(old, new)
        blocks.append(block)
        index += 1
    return blocks


# ----------------------------------------------------------------------------------------------- shape comments
SHAPE_COMMENT = re.compile(r"#\s*\((\s*\d+\s*(?:,\s*\d+\s*)*,?)\)")


def shape_comments(code: str) -> dict[int, tuple[int, ...]]:
    """Line -> the shape its comment states, for comments that start with a tuple of ints."""
    found = {}
    for token in tokenize.generate_tokens(io.StringIO(code).readline):
        if token.type == tokenize.COMMENT:
            match = SHAPE_COMMENT.match(token.string)
            if match:
                found[token.start[0]] = tuple(int(n) for n in match.group(1).split(",") if n.strip())
    return found


def with_shape_checks(code: str, filename: str) -> ast.Module:
    """`code` parsed, with `__check_shape__(value, shape, line)` after each statement that has a shape comment: the
    value of an expression statement, or the target of a single-name assignment. The check compares the value's
    `.shape`, or the value itself where it is a tuple (a `torch.Size` or a tuple of ints)."""
    tree = ast.parse(code, filename)
    expected = shape_comments(code)
    body = []
    for statement in tree.body:
        shape = expected.get(statement.end_lineno) or expected.get(statement.lineno)
        if shape is None:
            body.append(statement)
            continue
        if isinstance(statement, ast.Expr):
            value = statement.value
        elif isinstance(statement, ast.Assign | ast.AnnAssign):
            targets = statement.targets if isinstance(statement, ast.Assign) else [statement.target]
            if len(targets) != 1 or not isinstance(targets[0], ast.Name | ast.Attribute):
                raise AssertionError(f"{filename}:{statement.lineno}: a shape comment on an assignment of one name")
            body.append(statement)
            value = ast.parse(ast.unparse(targets[0]), mode="eval").body
        else:
            raise AssertionError(f"{filename}:{statement.lineno}: a shape comment on a {type(statement).__name__}")
        call = ast.Call(
            ast.Name("__check_shape__", ast.Load()),
            [value, ast.Constant(shape), ast.Constant(statement.lineno)],
            [],
        )
        check = ast.Expr(call)
        ast.copy_location(check, statement)
        body.append(ast.fix_missing_locations(check))
    tree.body = body
    return tree


# Runs the python blocks of one page in one namespace: reads a block's file name per line on stdin, answers one JSON
# line on the file descriptor given as argv[1] (the blocks' own output goes to stdout/stderr, a log file).
DRIVER = """
import json, os, sys, traceback
sys.path.insert(0, {tests!r})
from test_doc_snippets import with_shape_checks

def __check_shape__(value, shape, line):
    # A tensor's or array's shape, or a tuple of ints itself (`x.shape  # (1, 768)`, `a, b  # (384, 192)`)
    seen = tuple(value) if isinstance(value, tuple) else tuple(value.shape)
    assert seen == shape, f"line {{line}}: the comment says {{shape}}, the code gives {{seen}}"

namespace = {{"__name__": "__main__", "__check_shape__": __check_shape__}}
answers = os.fdopen(int(sys.argv[1]), "w")
for name in sys.stdin:
    name = name.strip()
    try:
        code = open(name).read()
        exec(compile(with_shape_checks(code, name), name, "exec"), namespace)
        result = {{"ok": True}}
    except BaseException:
        result = {{"ok": False, "error": traceback.format_exc(limit=-6)}}
    sys.stdout.flush(); sys.stderr.flush()
    answers.write(json.dumps(result) + "\\n"); answers.flush()
"""


class PythonSession:
    """One Python process for a page's python blocks, started at its first block."""

    def __init__(self, folder: Path, env: dict[str, str], log: Path):
        driver = folder.parent / "snippet_driver.py"
        driver.write_text(DRIVER.format(tests=str(Path(__file__).parent)))
        read_end, write_end = os.pipe()
        self.log = open(log, "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-u", str(driver), str(write_end)],
            cwd=folder,
            env=env,
            stdin=subprocess.PIPE,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            pass_fds=(write_end,),
            text=True,
        )
        os.close(write_end)
        self.answers = os.fdopen(read_end)

    def run(self, path: Path) -> dict:
        self.process.stdin.write(f"{path}\n")
        self.process.stdin.flush()
        line = self.answers.readline()
        return json.loads(line) if line else {"ok": False, "error": "the Python process ended"}

    def close(self) -> None:
        self.process.stdin.close()
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.answers.close()
        self.log.close()


# ------------------------------------------------------------------------------------------------------ the tests
@pytest.fixture(scope="session")
def sandbox_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("doc_sandbox")
    if not doc_sandbox.SHARED_VIDEOS.is_dir():
        pytest.skip(f"the sample videos are not at {doc_sandbox.SHARED_VIDEOS}")
    doc_sandbox.build_assets(root)
    return root


def test_every_block_is_tagged_and_skips_are_the_listed_ones():
    skips, problems = set(), []
    for page in pages():
        for block in read_blocks(page):
            if block.tag not in RUN_TAGS + DATA_TAGS:
                problems.append(f"{block.where}: fence tagged {block.tag!r}; tag it {RUN_TAGS + DATA_TAGS}")
            if block.skip:
                skips.add((page, block.skip))
    assert not problems, "\n".join(problems)
    assert skips == EXPECTED_SKIPS


def test_shape_comments_become_checks():
    code = "import torch\nx = torch.zeros(2, 3)  # (2, 3)\nx.sum(0)  # (3,): summed\nx  # (batch, 3)\n"
    namespace = {}

    def check(value, shape, line):
        namespace.setdefault("checked", []).append((tuple(value.shape), shape, line))

    namespace["__check_shape__"] = check
    exec(compile(with_shape_checks(code, "<test>"), "<test>", "exec"), namespace)
    assert namespace["checked"] == [((2, 3), (2, 3), 2), ((3,), (3,), 3)]


@pytest.mark.slow
@pytest.mark.parametrize("page", pages())
def test_page_runs(page, sandbox_root):
    blocks = [b for b in read_blocks(page) if b.tag in RUN_TAGS and not b.skip]
    if not blocks:
        pytest.skip("no code to run")
    folder = doc_sandbox.page_folder(sandbox_root / "assets", sandbox_root / "pages" / page.replace("/", "__"), page)
    env = doc_sandbox.environment(sandbox_root, folder)
    log = folder.parent / f"{folder.name}.log"
    python, times = None, []
    try:
        for number, block in enumerate(blocks):
            script = folder.parent / f"{folder.name}.{number}.{'py' if block.tag == 'python' else 'sh'}"
            script.write_text(block.code)
            start = time.perf_counter()
            if block.tag == "python":
                python = python or PythonSession(folder, env, log)
                result = python.run(script)
                ok, error = result["ok"], result.get("error", "")
            else:
                with open(log, "ab") as output:
                    done = subprocess.run(
                        ["bash", "-euo", "pipefail", str(script)],
                        cwd=folder,
                        env=env,
                        stdin=subprocess.DEVNULL,
                        stdout=output,
                        stderr=subprocess.STDOUT,
                        timeout=BLOCK_TIMEOUT,
                    )
                ok, error = done.returncode == 0, f"exit status {done.returncode}"
            times.append(f"{block.where} {time.perf_counter() - start:.1f} s")
            if not ok:
                tail = log.read_text(errors="replace")[-4000:] if log.exists() else ""
                pytest.fail(
                    f"{block.where} ({block.tag}) failed: {error}\n--- block ---\n{block.code}"
                    f"--- output (end) ---\n{textwrap.indent(tail, '  ')}",
                    pytrace=False,
                )
    finally:
        if python:
            python.close()
        print("\n".join(times))
