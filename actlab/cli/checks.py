"""Checks of a command line before Hydra runs: every bad input one line, exit code 2.

Group options that do not exist, output directories that cannot be made, and
keys that are not in the configuration (on the command line, in experiment
files and in study configs; a sweep is checked before any job is launched),
with the closest valid keys suggested.
"""


import argparse
import contextlib
import itertools
import os
import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn, cast

from actlab.config.validate import leaves as _leaves
from actlab.config.validate import present as _has
from actlab.config.validate import unknown_key

GROUPS = ("activation", "model", "dataset", "optimizer", "init", "logger")
OPEN = ("train.vmap", "model.kwargs", "model.sites")  # sections whose keys the user adds
SKIP = ("hydra", "experiment", "defaults")  # top-level keys of config files that are no settings
MAX_COMBOS = 16  # group combinations composed for a sweep; past that, one group at a time


def config_dir() -> Path:
    """configs/ shipped in the wheel (actlab/configs) or beside the source checkout."""
    package = Path(__file__).resolve().parent.parent  # actlab/
    for cand in (package / "configs", package.parent / "configs"):
        if (cand / "config.yaml").is_file():
            return cand
    raise FileNotFoundError("actlab's configs/ directory is missing from the installation")


def readme() -> str:
    """Where the documentation is: README.md of the source checkout, if this is one."""
    path = Path(__file__).resolve().parent.parent.parent / "README.md"
    return str(path) if path.is_file() else "README.md of the actlab source distribution"


def _fail(msg: str, code: int = 2) -> NoReturn:
    print(f"actlab-train: error: {msg}", file=sys.stderr)
    raise SystemExit(code)


def check_group_choices(argv: list[str], cfg_dir: Path | None = None) -> None:
    """Reject `group=name` overrides naming no config, listing the valid ones (one line)."""
    cfg_dir = cfg_dir or config_dir()
    for arg in argv:
        key, sep, value = arg.partition("=")
        key = key.lstrip("+~")
        if not sep or key not in GROUPS or any(c in value for c in "(*{"):
            continue
        options = sorted(p.stem for p in (cfg_dir / key).glob("*.yaml"))
        for v in value.split(","):
            if v.strip() not in options:
                _fail(f"unknown {key} '{v}'; choose from: {', '.join(options)}")


def check_output_dir(argv: list[str]) -> None:
    """Fail in one line if the run (or sweep) directory cannot be created, before Hydra tries."""
    multirun = any(a in ("-m", "--multirun") for a in argv)
    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    target = Path("multirun" if multirun else "outputs")
    for arg in argv:
        k, sep, v = arg.partition("=")
        if sep and k.lstrip("+~") == key and "$" not in v:
            target = Path(v.strip("'\""))
    p = target.absolute()
    while not p.exists():
        p = p.parent
    if not p.is_dir() or not os.access(p, os.W_OK | os.X_OK):
        _fail(f"cannot create the output directory {target}: {p} is "
              f"{'not a directory' if not p.is_dir() else 'not writable'}; choose another "
              f"with {key}=...")


# --------------------------------------------------------------------------- #
# Unknown keys: checked against the composed config before Hydra runs.

def _shown(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


class _Search:
    """The config directories Hydra searches (configs/, --config-dir, hydra.searchpath)."""

    def __init__(self, cfg_dir: Path, extra: list[Path], other: list[str]):
        self.dirs = [cfg_dir, *extra]
        self.other = [repr(s) for s in other]  # pkg:// and other non-file entries

    def home(self, name: str) -> Path | None:
        """The directory holding the primary config `name`, searched in Hydra's order."""
        return next((d for d in self.dirs if (d / f"{name}.yaml").is_file()), None)

    def is_group(self, key: str) -> bool:
        return key.startswith("hydra/") or any((d / key).is_dir() for d in self.dirs)

    def options(self, group: str) -> list[str]:
        return sorted({p.stem for d in self.dirs for p in (d / group).glob("*.yaml")})

    def file(self, name: str) -> Path | None:
        return next((d / f"{name}.yaml" for d in self.dirs if (d / f"{name}.yaml").is_file()),
                    None)

    def patch(self, name: str, package: str) -> tuple[Path, dict] | None:
        """A config file's settings as Hydra places them (its `# @package` or `package`)."""
        import yaml

        path = self.file(name)
        if path is None:
            return None
        text = path.read_text()
        m = re.search(r"^#\s*@package\s+(\S+)", text, re.MULTILINE)
        package = m.group(1) if m else package
        package = {"_global_": "", "_group_": name.rpartition("/")[0].replace("/", ".")}.get(
            package, package)
        tree = yaml.safe_load(text) or {}
        tree = {k: v for k, v in tree.items() if k not in SKIP} if isinstance(tree, dict) else {}
        for part in reversed([p for p in package.split(".") if p]):
            tree = {part: tree}
        return path, tree


def _composition_error(err: Exception, search: _Search) -> str | None:
    """One line for a config file Hydra cannot compose, or None when it is something else."""
    from hydra.errors import MissingConfigException
    from omegaconf import OmegaConf

    m = re.match(r"In '([^']+)'", str(err))
    path = search.file(m.group(1)) if m else None
    where = f" in {_shown(path)}" if path else ""
    if isinstance(err, MissingConfigException):
        if not err.missing_cfg_file or err.options is None:
            return None
        group, _, name = err.missing_cfg_file.rpartition("/")
        return f"unknown {group} '{name}'{where}; choose from: {', '.join(err.options)}"
    cause = err.__cause__ or err.__context__
    key, parent = getattr(cause, "full_key", None), getattr(cause, "parent_node", None)
    if not key or not OmegaConf.is_dict(parent) or "not in" not in str(cause):
        return None
    assert parent is not None  # is_dict
    tree: dict = {str(k): None for k in parent.keys()}
    for part in reversed(key.split(".")[:-1]):
        tree = {part: tree}
    return unknown_key(tree, key, where)


def hydra_args(argv: list[str]) -> argparse.Namespace:
    """A Hydra app's command line as Hydra reads it: its flags (Hydra's documented CLI) and
    the overrides. Unknown flags are left to Hydra, which answers them."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("overrides", nargs="*")
    for flags in (("--help", "-h"), ("--hydra-help",), ("--version",), ("--resolve",),
                  ("--run", "-r"), ("--multirun", "-m"), ("--shell-completion", "-sc")):
        p.add_argument(*flags, action="store_true")
    for flags in (("--cfg", "-c"), ("--package", "-p"), ("--config-path", "-cp"),
                  ("--config-name", "-cn"), ("--config-dir", "-cd"),
                  ("--experimental-rerun",)):
        p.add_argument(*flags)
    p.add_argument("--info", "-i", nargs="?", const="all")
    return p.parse_known_args(argv)[0]


def check_keys(argv: list[str], cfg_dir: Path | None = None) -> list[str]:
    """Reject unknown config keys in one line (exit code 2) before Hydra runs.

    The key=value overrides of the command line and of the sweeper's params, and the
    settings of a study or appended (`+experiment=...`) config, are checked against the
    config composed with the group choices only: for a sweep, each combination of the
    swept groups those keys live in. `+key`, `++key` and `hydra.*` stay Hydra's. Returns
    argv with missing `train.vmap.*` keys made explicit appends (`++`), as Hydra needs.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    cfg_dir = cfg_dir or config_dir()
    args = hydra_args(argv)
    if args.hydra_help or args.info or args.shell_completion or args.config_path \
            or args.experimental_rerun:
        return argv
    parser = OverridesParser.create()
    try:
        parsed = parser.parse_overrides(args.overrides)
    except Exception:
        return argv  # Hydra words its own syntax errors
    if not args.multirun and any(ov.is_sweep_override() for ov in parsed):
        return argv
    searchpath = [str(v) for ov in parsed if ov.key_or_group == "hydra.searchpath"
                  for v in (cast(list, ov.value()) if isinstance(ov.value(), list) else [])]
    extra = [Path(args.config_dir).absolute()] if args.config_dir else []
    search = _Search(cfg_dir, extra + [Path(s[7:]) for s in searchpath if s.startswith("file://")],
                     [s for s in searchpath if not s.startswith("file://")])
    name = args.config_name or "config"
    hydra_lines: list[str] = []
    groups: dict[str, list[str]] = {}  # override key (with its +/~) -> one override line per value
    keys: list[tuple[Any, str]] = []  # (override, where it comes from: "" for the command line)
    found: list[tuple[Path, dict] | None] = []  # None: no such config file

    def add(ov: Any, where: str = "") -> None:
        group, element = ov.key_or_group, ov.get_key_element()
        if ov.is_hydra_override():
            if not where and group.startswith("hydra/"):
                hydra_lines.append(ov.input_line)
        elif not search.is_group(group) or isinstance(ov.value(), dict):
            if not where or not any(o.key_or_group == group for o, w in keys if not w):
                keys.append((ov, where))  # the command line beats the sweeper's params
        elif element not in groups and (not ov.is_sweep_override() or ov.is_discrete_sweep()):
            values = [ov.value()]
            if ov.is_sweep_override():
                values = (ov.value().filter(search.options(group)) if ov.value_type.name ==
                          "GLOB_CHOICE_SWEEP" else list(ov.sweep_string_iterator()))
            for v in values:
                if isinstance(v, str) and v not in search.options(group):
                    _fail(f"unknown {group} '{v}'{where}; choose from: "
                          f"{', '.join(search.options(group))}")
            groups[element] = ([f"{element}={v}" for v in values] if ov.is_sweep_override()
                               else [ov.input_line])
            found.extend(search.patch(f"{group}/{v}", group.replace("/", "."))
                         for v in values if ov.is_add() and isinstance(v, str))

    for ov in parsed:
        add(ov)
    if name != "config":
        found.append(search.patch(name, ""))
    patches = [p for p in found if p is not None]
    home = search.home(name)
    if (not keys and not patches) or home is None:
        return argv  # nothing to check, or a missing config Hydra names itself
    rewrite: set[str] = set()
    choice_sets: list[dict[str, str]] = []
    try:
        with _composer(search, home) as compose:
            first = compose(name, [lines[0] for lines in groups.values()] + hydra_lines)
            where = f" in {_shown(home / f'{name}.yaml')} (hydra.sweeper.params)"
            params = first.hydra.sweeper.get("params") if args.multirun else None
            for k, v in (params or {}).items():
                add(parser.parse_override(f"{k}={v}"), where)
            sections = {ov.key_or_group.split(".")[0] for ov, _ in keys}
            sections |= {k for _, tree in patches for k in tree}
            for combo in _combos(groups, sections):
                cfg = compose(name, combo + hydra_lines)
                choices = dict(cfg.hydra.runtime.choices)
                added: list[str]
                tree, added = _tree(cfg), []
                for ov, src in keys:
                    if _check_override(ov, tree, src + _context(ov.key_or_group, choices),
                                       added) and not src:
                        rewrite.add(ov.input_line)
                choice_sets.append({g: choices[g] for g in GROUPS if choices.get(g)})
        if patches:
            _check_patches(patches, choice_sets, search)
    except Exception:  # _Unchecked, or an input these checks cannot read: Hydra answers it
        return argv
    return [f"++{a}" if a in rewrite else a for a in argv]


def _context(key: str, choices: dict) -> str:
    """` for model=cnn` when the key is in a group option's section (the option has the keys)."""
    group = key.lstrip("+~").split(".")[0]
    return f" for {group}={choices[group]}" if group in GROUPS and choices.get(group) else ""


def _tree(cfg: Any) -> dict:
    """A composed config as plain dicts and lists (interpolations unresolved), hydra left out."""
    from omegaconf import OmegaConf

    tree = cast(dict, OmegaConf.to_container(cfg, resolve=False))  # a DictConfig's: a dict
    return {k: v for k, v in tree.items() if k != "hydra"}


class _Unchecked(Exception):
    """A composition these checks do not understand: Hydra reports it in its own words."""


@contextlib.contextmanager
def _composer(search: _Search, home: Path) -> Iterator[Callable[[str, list[str]], Any]]:
    """Hydra's compose API over the search path, `home` holding the primary config; cached."""
    from hydra import compose, initialize_config_dir

    paths = [f"'file://{d}'" for d in search.dirs if d != home] + search.other
    searchpath, cache = [f"hydra.searchpath=[{','.join(paths)}]"], {}

    def run(name: str, overrides: list[str]) -> Any:
        key = (name, *overrides)
        if key not in cache:
            try:
                cache[key] = compose(name, overrides + searchpath, return_hydra_config=True)
            except Exception as e:
                msg = _composition_error(e, search)
                if msg:
                    _fail(msg)
                raise _Unchecked from e
        return cache[key]

    with initialize_config_dir(config_dir=str(home), version_base="1.3", job_name="cli"):
        yield run


def _combos(groups: dict[str, list[str]], sections: set[str]) -> list[list[str]]:
    """Group override lines to compose: the combinations of the swept groups that matter."""
    keys, fixed = list(groups), [lines[0] for lines in groups.values()]
    swept = [i for i, k in enumerate(keys) if len(groups[k]) > 1
             and (k.startswith("+") or k.lstrip("~").split("@")[0] in sections)]
    values = [groups[keys[i]] for i in swept]
    if len(list(itertools.islice(itertools.product(*values), MAX_COMBOS + 1))) <= MAX_COMBOS:
        picks = list(itertools.product(*values))
    else:  # one group at a time, the others at their first value
        picks = [tuple(v if j == i else vs[0] for j, vs in enumerate(values))
                 for i, lines in enumerate(values) for v in lines]
    return [[dict(zip(swept, p, strict=True)).get(i, line) for i, line in enumerate(fixed)]
            for p in picks]


def _check_override(ov: Any, tree: dict, where: str, added: list[str]) -> bool:
    """Fail on an override whose key the config lacks; True for a key new to an open section."""
    key = ov.key_or_group
    if ov.is_add() or ov.is_force_add():
        added.append(key)
        return False
    if any(key == a or key.startswith(f"{a}.") for a in added):
        return False
    value = ov.value()
    for path in _leaves(value, f"{key}.") if isinstance(value, dict) and value else [key]:
        if _has(tree, path.split(".")):
            continue
        if path.startswith(tuple(f"{o}." for o in OPEN)) and not ov.is_delete():
            return True
        _fail(unknown_key(tree, path, where))
    return False


def _check_patches(patches: list[tuple[Path, dict]], choice_sets: list[dict[str, str]],
                   search: _Search) -> None:
    """Fail on a setting of a study or appended config that its group options do not define.

    A file may switch an option by name (`optimizer: {name: sgd}`): that option's keys count.
    """
    named = {g: tree[g]["name"] for _, tree in patches for g in GROUPS
             if isinstance(tree.get(g), dict) and tree[g].get("name") in search.options(g)}
    trees: dict[tuple, dict] = {}
    with _composer(search, search.dirs[0]) as compose:
        def ref(choices: dict[str, str]) -> dict:
            key = tuple(sorted(choices.items()))
            if key not in trees:
                trees[key] = _tree(compose("config", [f"{g}={c}" for g, c in key]))
            return trees[key]

        for choices in {tuple(sorted(c.items())): c for c in choice_sets}.values():
            for path, patch in patches:
                for key in _leaves(patch):
                    parts, group = key.split("."), key.split(".")[0]
                    if key.startswith(tuple(f"{o}." for o in OPEN)) or _has(ref(choices), parts):
                        continue
                    if group in named and _has(ref({**choices, group: named[group]}), parts):
                        continue
                    _fail(unknown_key(ref(choices), key,
                                      f" in {_shown(path)}" + _context(key, choices)))


