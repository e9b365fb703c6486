"""Hand-written results text quotes the recipe-written tables verbatim: a table in a results folder's README.md (or
in README.md outside its generated Results block) whose header is a recipe table's header must have every row in
that recipe's markdown. (A copy in recipes/results/fig3/dmt_from_init/README.md kept a '-' for a run that had landed.)
The same holds for a copied caption: a line that opens as a recipe-written caption does (its first 60 characters)
must be one of the recipe's captions as it is now (a copied caption once kept a step count after the runs changed)."""

import glob
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "recipes", "results")


def tables(text: str) -> list[list[str]]:
    """The markdown tables of `text`, each as its lines (header, rule, rows)."""
    out, cur = [], []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            cur.append(line.rstrip())
        elif cur:
            out.append(cur)
            cur = []
    return out


def stale_rows(doc: str, generated: list[str]) -> list[str]:
    """Rows of `doc`'s tables that copy a generated table (same header) but appear in no generated file."""
    gen_lines = {line.rstrip() for text in generated for line in text.splitlines()}
    return [row for t in tables(doc) if t[0] in gen_lines for row in t[2:] if row not in gen_lines]


def stale_captions(doc: str, generated: list[str], prefix: int = 60) -> list[str]:
    """Lines of `doc` that open as a generated caption (a non-table line of 120+ characters) but match none exactly."""
    caps = {line.rstrip() for text in generated for line in text.splitlines()
            if len(line) >= 120 and not line.startswith("|")}
    heads = {c[:prefix] for c in caps}
    return [line.rstrip() for line in doc.splitlines()
            if not line.startswith("|") and line[:prefix] in heads and line.rstrip() not in caps]


def test_stale_captions_finds_a_copied_caption_the_recipe_has_since_changed():
    cap = "The control, DMT without SMT: " + "more steps (per family: associative_recall 7400 steps, against 3184 s)." * 2
    gen = f"# Fig 3\n\n{cap}\n\n| family | a |\n|---|---|\n"
    assert stale_captions(f"intro\n\n{cap}\n", [gen]) == []
    old = cap.replace("3184 s", "3463 s")
    assert stale_captions(f"intro\n\n{old}\n", [gen]) == [old]
    assert stale_captions("The control is hand-written prose that quotes nothing.\n", [gen]) == []


def test_stale_rows_finds_a_copied_row_the_recipe_has_since_changed():
    gen = "| family | a | b |\n|---|---|---|\n| stack | 0.89 | 0.41 |\n"
    assert stale_rows("x\n\n| family | a | b |\n|---|---|---|\n| stack | 0.89 | 0.41 |\n", [gen]) == []
    assert stale_rows("| family | a | b |\n|---|---|---|\n| stack | 0.89 | - |\n", [gen]) == ["| stack | 0.89 | - |"]
    assert stale_rows("| T | own table |\n|---|---|\n| 8 | 1.00 |\n", [gen]) == []  # not a copy: not checked


def test_results_readmes_quote_the_recipe_tables_as_they_are_now():
    generated = [open(p, encoding="utf-8").read() for p in glob.glob(os.path.join(RESULTS, "**", "*.md"), recursive=True)
                 if os.path.basename(p) != "README.md"]
    readme = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    start, end = readme.index("<!-- results:start -->"), readme.index("<!-- results:end -->")
    docs = {"README.md (hand-written part)": readme[:start] + readme[end:]}
    for path in glob.glob(os.path.join(RESULTS, "**", "README.md"), recursive=True):
        docs[os.path.relpath(path, ROOT)] = open(path, encoding="utf-8").read()
    stale = {name: rows for name, doc in docs.items() if (rows := stale_rows(doc, generated))}
    assert not stale, f"copied table rows that no recipe table has now: {stale}"
    stale = {name: lines for name, doc in docs.items() if (lines := stale_captions(doc, generated))}
    assert not stale, f"copied captions that no recipe table has now: {stale}"
