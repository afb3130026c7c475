"""docs/options.md documents every option and cannot drift from conf/ (it is generated: dapo_lab.options)."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import yaml

from dapo_lab.options import CONF, REGENERATE, generate
from dapo_lab.trainer import settings

PAGE_PATH = CONF.parent / "docs" / "options.md"
PAGE = PAGE_PATH.read_text() if PAGE_PATH.is_file() else ""
OPTION_FILES = sorted(p for p in CONF.rglob("*.yaml") if p.parent != CONF and CONF / "hydra" not in p.parents)
TRAIN = yaml.safe_load((CONF / "train.yaml").read_text())
ROW = re.compile(r"^\| `(?P<key>[^`]+)` \| `.*` \| (?P<meaning>.*) \|$")


def section(heading: str) -> str:
    """The page from ``heading`` (a whole line) to the next heading."""
    lines = PAGE.splitlines()
    assert heading in lines, f"{heading!r} is missing from docs/options.md"
    start = lines.index(heading) + 1
    end = next((i for i in range(start, len(lines)) if lines[i].startswith("#")), len(lines))
    return "\n".join(lines[start:end])


def leaf_paths(node: dict, prefix: str = "") -> list[str]:
    """Dotted paths of a YAML mapping's values (PyYAML's reading, independent of the generator's)."""
    paths = []
    for key, value in node.items():
        if prefix == "" and key in ("defaults", "_target_"):
            continue
        if isinstance(value, dict) and value:
            paths += leaf_paths(value, f"{prefix}{key}.")
        else:
            paths.append(f"{prefix}{key}")
    return paths


def test_page_is_current():
    assert PAGE == generate(), f"docs/options.md is stale or missing: regenerate it with `{REGENERATE}`"


@pytest.mark.parametrize("path", OPTION_FILES, ids=lambda p: p.relative_to(CONF).as_posix())
def test_every_option_and_key_is_on_the_page(path: Path):
    group = path.relative_to(CONF).parts[0]
    option = path.relative_to(CONF / group).with_suffix("").as_posix()
    text = section(f"#### `{group}={option}`" + (" (default)" if {group: option} in TRAIN["defaults"] else ""))
    content = yaml.safe_load(path.read_text()) or {}
    if "_target_" in content:
        assert f"`{content['_target_']}`" in text
    missing = [key for key in leaf_paths(content) if f"| `{key}` |" not in text]
    assert missing == [], f"keys of {path} missing from docs/options.md: regenerate it with `{REGENERATE}`"


@pytest.mark.parametrize("node", [None] + [k for k, v in TRAIN.items() if isinstance(v, dict)])
def test_every_setting_of_train_yaml_is_on_the_page(node: str | None):
    text = section("### top level" if node is None else f"### {node}")
    keys = [k for k, v in TRAIN.items() if k != "defaults" and not isinstance(v, dict)] if node is None \
        else leaf_paths(TRAIN[node])
    assert [key for key in keys if f"| `{key}` |" not in text] == []


SETTINGS = [settings.BatchSettings, settings.OptimSettings, settings.GenerationSettings, settings.EvalSettings,
            settings.RolloutCorrection]


@pytest.mark.parametrize("cls", SETTINGS, ids=lambda c: c.__name__)
def test_every_settings_field_has_a_meaning(cls: type):
    target = f"{cls.__module__}.{cls.__qualname__}"
    nodes = [k for k, v in TRAIN.items() if isinstance(v, dict) and v.get("_target_") == target]
    assert len(nodes) == 1, f"conf/train.yaml has no node with _target_: {target}"
    rows = {m["key"]: m["meaning"].strip() for m in map(ROW.match, section(f"### {nodes[0]}").splitlines()) if m}
    undocumented = [f.name for f in dataclasses.fields(cls) if not rows.get(f.name)]
    assert undocumented == [], (f"{target} fields without a default and meaning in docs/options.md: "
                                f"{undocumented}. Add each to conf/train.yaml's `{nodes[0]}` node and to the class's "
                                f"`Args:` docstring (or a YAML comment), then `{REGENERATE}`")


def table_rows(page: str) -> list[tuple[str, str, list[str]]]:
    """``(### section, #### option, cells)`` of every row of the page's ``| key | default | meaning |`` tables (header
    and rule lines left out); cells are split on unescaped pipes, as ``options.table`` escapes a value's ``|``."""
    rows, section, option = [], "", ""
    for line in page.splitlines():
        if line.startswith("### "):
            section, option = line[4:], ""
        elif line.startswith("#### "):
            option = line[5:]
        elif line.startswith("| ") and not line.startswith("| key |"):
            rows.append((section, option, [cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1]]))
    return rows


def test_every_row_has_a_meaning():
    rows = table_rows(PAGE)
    assert len(rows) > 100, "no option tables found in docs/options.md"
    assert [cells for _, _, cells in rows if len(cells) != 3] == []
    empty = [f"{option or section}: {cells[0]}" for section, option, cells in rows if not cells[2]]
    assert empty == [], (f"options without a meaning in docs/options.md: {empty}. Add an `Args:` entry to the "
                         f"`_target_` class's docstring, or an inline `# comment` to the YAML key, then `{REGENERATE}`")
