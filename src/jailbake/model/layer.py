"""Layer files are kas project configuration files; kas's loader reads and merges them."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..cache.keys import path_digest
from ..core import gitcmd, yamlfile
from ..core.errors import RecipeError
from ..core.fields import CONTROL
from ..core.paths import resolve_mirror
from .recipe import VAR_RE
from .repos import RepoPin
from .scan import ConfigScan, repositories

if TYPE_CHECKING:
    from .repos import RepoCheckouts

DEFAULT_SOURCE_DATE_EPOCH = 0
# Layer variable naming source mirrors (directories relative to the top repository, or
# URLs), looked up after --mirror and before upstream, like bitbake's PREMIRRORS.
MIRRORS_VARIABLE = "JAILBAKE_MIRRORS"
log = logging.getLogger(__name__)
_kas_ready = threading.Lock()
_kas_context = False


@dataclass(frozen=True)
class Layer:
    """The merged configuration of one or more layer files."""

    files: tuple[Path, ...]
    top_dir: Path
    recipe_dirs: tuple[Path, ...]
    docker_dirs: tuple[Path, ...]
    targets: tuple[str, ...]
    env: tuple[tuple[str, str], ...]
    source_date_epoch: int
    machine: str
    artifacts: tuple[tuple[str, str], ...]
    mirrors: tuple[str, ...] = ()
    # Remote layer repositories as used: (name, url, commit), for the manifest.
    repos: tuple[tuple[str, str, str], ...] = ()
    # What a later build must find unchanged to be answered from this one's record
    # (see replay): where the configuration came from, the variables of its env: section,
    # each repository's docker/ directory and whether it existed, and whether a
    # repository floats on a branch or tag.
    scan: ConfigScan | None = None
    env_names: tuple[str, ...] = ()
    probes: tuple[tuple[str, bool], ...] = ()
    floating: bool = False
    # Paths as written that links resolved (repositories, layer directories): (written,
    # found); and other files the configuration names (kas patches), with their digests.
    resolved: tuple[tuple[str, str], ...] = ()
    read_files: tuple[tuple[str, str], ...] = ()

    @property
    def name(self) -> str:
        return ":".join(str(f) for f in self.files)

    def variables(self) -> dict[str, str]:
        return dict(self.env)


def _memo_path(memo_dir: Path, files: Sequence[Path]) -> Path:
    from .. import __version__

    key = json.dumps([__version__, [str(f) for f in files]])
    return memo_dir / (hashlib.sha256(key.encode()).hexdigest()[:32] + ".json")


def _remembered(
    memo_dir: Path, files: Sequence[Path]
) -> tuple[dict[str, Any], Path, ConfigScan] | None:
    """kas's merged configuration of files as an earlier load left it, if none of the
    files it read (nor their neighbours) changed since."""
    try:
        memo = json.loads(_memo_path(memo_dir, files).read_bytes())
        scan = ConfigScan(
            tuple(memo["dirs"]), str(memo["fingerprint"]), tuple(memo["repositories"])
        )
        if scan.holds(files[0]):
            return memo["config"], Path(memo["top"]), scan
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None


def _remember(
    memo_dir: Path, files: Sequence[Path], config: dict[str, Any], top: Path, scan: ConfigScan
) -> None:
    try:
        memo = {
            "dirs": list(scan.dirs),
            "fingerprint": scan.fingerprint,
            "repositories": list(scan.repositories),
            "config": config,
            "top": str(top),
        }
        text = json.dumps(memo)
        memo_dir.mkdir(parents=True, exist_ok=True)
        tmp = memo_dir / f".tmp-{os.getpid()}-{threading.get_ident()}"
        tmp.write_text(text)
        os.replace(tmp, _memo_path(memo_dir, files))
    except (OSError, TypeError, ValueError) as exc:  # not JSON, or no room: load again
        log.debug("layer configuration not remembered: %s", exc)


def _kas_config(
    files: Sequence[Path], memo_dir: Path | None = None, use_lock: bool = True
) -> tuple[dict[str, Any], Path, ConfigScan]:
    """kas's merged configuration of files, the top repository's directory and what it
    was read from; with memo_dir, remembered there, so that unchanged layer files need no
    kas at all."""
    if memo_dir is not None:
        known = _remembered(memo_dir, files)
        if known is not None:
            return known
    config, top, read = _load_with_kas(files, use_lock)
    scan = ConfigScan.of(files[0], [str(top), *(str(f.parent) for f in (*files, *read))])
    if memo_dir is not None:
        _remember(memo_dir, files, config, top, scan)
    return config, top, scan


def _load_with_kas(
    files: Sequence[Path], use_lock: bool = True
) -> tuple[dict[str, Any], Path, list[Path]]:
    global _kas_context
    import argparse

    from kas import context
    from kas.includehandler import IncludeHandler
    from kas.kasusererror import KasUserError

    with _kas_ready:
        if not _kas_context:
            context.create_global_context(
                argparse.Namespace(
                    update=False, force_checkout=False, no_color=True, preserve_env=False
                )
            )
            _kas_context = True
    handler = IncludeHandler([str(f) for f in files], use_lock=use_lock)
    project = _project_top(files[0])
    if project is not None:  # not a checkout: the project's marked top, not the file's dir
        handler.top_repo_path = str(project)
    top = Path(handler.get_top_repo_path()).resolve()
    for f in files:
        _check_layer_file(f, top, ())
    kas_log = logging.getLogger()
    previous = kas_log.level
    kas_log.setLevel(logging.CRITICAL)  # kas logs each schema error; we report one line
    try:
        config, missing = handler.get_config(repos={})
    except KasUserError as exc:
        error = _explain_kas_error(files, exc)
        raise RecipeError(error.path, error.field, error.message + _top_hint(files[0])) from None
    finally:
        kas_log.setLevel(previous)
    if missing:
        raise RecipeError(
            files[0],
            "header.includes",
            f"includes from repositories that are not local: {', '.join(missing)}",
        )
    read = [Path(cf.filename).resolve() for cf in handler.config_files]
    return config, top, read


PROJECT_MARKERS = ("jailbake.yml", "pyproject.toml")


def _project_top(first: Path) -> Path | None:
    """Where layer paths start when the first layer file is in no git or mercurial
    checkout (a release tarball, `git archive`, a CI cache): the nearest directory above
    it that holds a jailbake.yml or pyproject.toml. None inside a checkout (kas finds its
    top) or without a marker (kas takes the file's directory)."""
    if repositories(first):
        return None
    for d in (first.parent, *first.parent.parents):
        if any((d / marker).is_file() for marker in PROJECT_MARKERS):
            return d
    return None


def _top_hint(first: Path) -> str:
    """Why layer paths may not be found, where the top directory is only a guess."""
    if repositories(first) or _project_top(first) is not None:
        return ""
    return (
        f" (layer paths start at {first.parent}: {first.name} is in no git or mercurial "
        "checkout, and no jailbake.yml or pyproject.toml above it marks the project's top "
        "directory; add one there)"
    )


def _check_layer_file(path: Path, top: Path, chain: tuple[Path, ...]) -> None:
    """Read path and its local includes and lock file as kas will, but strictly first:
    kas's loader lets a repeated key silently win and recurses forever on an include loop."""
    path = path.resolve()
    if path in chain:
        loop = " -> ".join(str(p) for p in (*chain[chain.index(path) :], path))
        raise RecipeError(chain[-1], "header.includes", f"include loop: {loop}")
    if not path.is_file():
        return  # kas names the missing file
    data = yamlfile.load(path)
    lock = path.parent / f"{path.stem}.lock{path.suffix}"
    if lock.is_file():
        yamlfile.load(lock)
    header = data.get("header") if isinstance(data, dict) else None
    includes = header.get("includes") if isinstance(header, dict) else None
    for include in includes if isinstance(includes, list) else ():
        if isinstance(include, str):
            # Repository-relative first, then relative to the including file, as kas does.
            candidate = (top / include).resolve()
            if not candidate.exists():
                candidate = (path.parent / include).resolve()
            _check_layer_file(candidate, top, (*chain, path))


def _explain_kas_error(files: Sequence[Path], exc: Exception) -> RecipeError:
    """Turn kas's multi-line schema report into one line naming file and field."""
    import yaml
    from jsonschema import Draft7Validator
    from kas.configschema import CONFIGSCHEMA

    filename = getattr(exc, "filename", None) or str(files[0])
    try:
        data = yaml.safe_load(Path(filename).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return RecipeError(filename, "", str(exc).splitlines()[0])
    errors = sorted(Draft7Validator(CONFIGSCHEMA).iter_errors(data), key=lambda e: list(e.path))
    if not errors:
        return RecipeError(filename, "", str(exc).splitlines()[0])
    err = errors[0]
    field = ".".join(str(p) for p in err.absolute_path)
    if err.validator == "additionalProperties":
        allowed = sorted(err.schema.get("properties", {}))
        extra = sorted(set(err.instance) - set(allowed)) if isinstance(err.instance, dict) else []
        field = ".".join([field, *extra[:1]]) if field else ",".join(extra)
        return RecipeError(filename, field, f"unknown key; expected one of: {', '.join(allowed)}")
    return RecipeError(filename, field or "", f"not a valid kas configuration: {err.message}")


def merged_config(files: Sequence[Path]) -> tuple[dict[str, Any], Path]:
    """kas's merged configuration of the layer files and the top directory of their paths
    (what `kas dump` prints)."""
    config, top, _ = _kas_config([f.resolve() for f in files])
    return config, top


def load_layers(
    files: Sequence[Path],
    environ: Mapping[str, str] | None = None,
    memo_dir: Path | None = None,
    repos: RepoCheckouts | None = None,
    use_lock: bool = True,
) -> Layer:
    """Load layer files with kas, later files overriding earlier ones. With memo_dir,
    kas's result is remembered there and used again while the files are unchanged."""
    environ = os.environ if environ is None else environ
    if not files:
        raise RecipeError("<command line>", "CONFIG", "expected at least one layer file")
    for f in files:
        if not f.is_file():
            raise RecipeError(f, "", "layer file not found")
    files = [f.resolve() for f in files]
    config, top_dir, scan = _kas_config(files, memo_dir if use_lock else None, use_lock)
    first = files[-1]

    recipe_dirs: list[Path] = []
    docker_dirs: list[Path] = []
    used: list[tuple[str, str, str]] = []
    probes: list[tuple[str, bool]] = []
    resolved: list[tuple[str, str]] = []
    read_files: list[tuple[str, str]] = []
    floating = False
    locked = ((config.get("overrides") or {}).get("repos")) or {}
    for repo_id, repo in (config.get("repos") or {}).items():
        repo = repo or {}
        if repo.get("url"):
            floating |= not ((locked.get(repo_id) or {}).get("commit") or repo.get("commit"))
            consulted: list[tuple[str, str]] = []
            patches = _patch_files(repo_id, repo, config, top_dir, first, consulted)
            resolved += consulted
            read_files += [(found, path_digest(Path(found))) for _, found in consulted]
            root = _remote_repo(repo_id, repo, locked.get(repo_id) or {}, first, repos, patches)
            used.append((repo_id, repo["url"], root.name.rsplit("-", 1)[-1]))
        else:
            root = top_dir
            if repo.get("path"):
                root = (top_dir / repo["path"]).resolve()
                resolved.append((str(top_dir / repo["path"]), str(root)))
        if not root.is_dir():
            raise RecipeError(first, f"repos.{repo_id}.path", f"directory {root} does not exist")
        layers = repo.get("layers") or {"recipes": None}
        for layer_name, setting in layers.items():
            if setting not in (None,) and not isinstance(setting, dict):
                continue  # "disabled" and its legacy spellings
            layer_dir = (root / layer_name).resolve()
            resolved.append((str(root / layer_name), str(layer_dir)))
            if not layer_dir.is_relative_to(root):
                raise RecipeError(
                    first,
                    f"repos.{repo_id}.layers.{layer_name}",
                    "layer path escapes its repository",
                )
            if not layer_dir.is_dir():
                raise RecipeError(
                    first,
                    f"repos.{repo_id}.layers.{layer_name}",
                    f"expected a directory of recipes, {layer_dir} does not exist"
                    + _top_hint(files[0]),
                )
            if layer_dir not in recipe_dirs:
                recipe_dirs.append(layer_dir)
        has_docker = (root / "docker").is_dir()
        probes.append((str(root / "docker"), has_docker))
        if has_docker and (root / "docker") not in docker_dirs:
            docker_dirs.append(root / "docker")
    if not recipe_dirs:
        raise RecipeError(first, "repos", "expected at least one repository with recipe layers")

    env: dict[str, str] = {}
    for var, default in sorted((config.get("env") or {}).items()):
        if not isinstance(var, str) or not VAR_RE.fullmatch(var):
            raise RecipeError(first, "env", f"expected variable names, got {var!r}")
        value = environ.get(var, default)
        if value is not None:
            if "\0" in str(value):
                raise RecipeError(first, f"env.{var}", "contains a NUL byte")
            if var.startswith("JAILBAKE_") and CONTROL.search(str(value)):
                # jailbake's own settings reach argument lists and one-line records
                raise RecipeError(first, f"env.{var}", f"expected one line, got {value!r}")
            env[var] = str(value)
    sde_text = env.setdefault("SOURCE_DATE_EPOCH", str(DEFAULT_SOURCE_DATE_EPOCH))
    if not (sde_text.isascii() and sde_text.isdigit()):
        raise RecipeError(
            first,
            "env.SOURCE_DATE_EPOCH",
            f"expected a number of seconds since 1970, got {sde_text!r}",
        )
    mirrors = tuple(resolve_mirror(m, top_dir) for m in env.pop(MIRRORS_VARIABLE, "").split())
    target = config.get("target") or []
    targets = (target,) if isinstance(target, str) else tuple(target)
    return Layer(
        files=tuple(files),
        top_dir=top_dir,
        recipe_dirs=tuple(recipe_dirs),
        docker_dirs=tuple(docker_dirs),
        targets=targets,
        env=tuple(sorted(env.items())),
        source_date_epoch=int(sde_text),
        machine=str(config.get("machine") or ""),
        artifacts=tuple(sorted((config.get("artifacts") or {}).items())),
        mirrors=mirrors,
        repos=tuple(used),
        scan=scan,
        env_names=tuple(sorted(str(v) for v in config.get("env") or {})),
        probes=tuple(probes),
        floating=floating,
        resolved=tuple(resolved),
        read_files=tuple(read_files),
    )


def _patch_files(
    name: str,
    repo: Mapping[str, Any],
    config: Mapping[str, Any],
    top: Path,
    first: Path,
    consulted: list[tuple[str, str]] | None = None,
) -> list[Path]:
    """kas's `patches:` of a repository, in the order of their ids: each a patch file, or
    a quilt directory whose `series` lists them, in a local repository of the
    configuration (`repo:`). consulted receives each entry's path, as written and as
    found."""
    out: list[Path] = []
    for pid, entry in sorted((repo.get("patches") or {}).items()):
        field = f"repos.{name}.patches.{pid}"
        if not isinstance(entry, dict) or not entry.get("path") or not entry.get("repo"):
            raise RecipeError(first, field, "expected a 'repo' and a 'path', as kas does")
        holder = (config.get("repos") or {}).get(entry["repo"])
        if holder is None or (holder or {}).get("url"):
            raise RecipeError(
                first, f"{field}.repo", f"expected a local repository of this configuration, "
                f"got {entry['repo']!r}"
            )  # fmt: skip
        root = (top / holder["path"]).resolve() if (holder or {}).get("path") else top
        path = (root / str(entry["path"])).resolve()
        if not path.is_relative_to(root) or not path.exists():
            raise RecipeError(first, f"{field}.path", f"{path} is not a file in {root}")
        if consulted is not None:
            consulted.append((str(root / str(entry["path"])), str(path)))
        if path.is_dir():
            series = path / "series"
            if not series.is_file():
                raise RecipeError(first, f"{field}.path", f"{path} holds no quilt 'series'")
            names = [ln.split()[0] for ln in series.read_text().splitlines()
                     if ln.strip() and not ln.startswith("#")]  # fmt: skip
            for name in names:
                listed = (path / name).resolve()
                if not listed.is_relative_to(root) or not listed.is_file():
                    raise RecipeError(
                        first, f"{field}.path", f"{series} lists {name!r}, not a file in {root}"
                    )
                out.append(listed)
        else:
            out.append(path)
    return out


def _remote_repo(
    name: str,
    repo: Mapping[str, Any],
    locked: Mapping[str, Any],
    first: Path,
    repos: RepoCheckouts | None,
    patches: Sequence[Path] = (),
) -> Path:
    """The checkout of a repository kas names by URL: at its lock file's commit, else its
    own commit, else the newest of its branch or tag (which floats, and is said so); its
    patches applied."""
    commit = str(locked.get("commit") or repo.get("commit") or "")
    branch, tag = str(repo.get("branch") or ""), str(repo.get("tag") or "")
    if not commit and not branch and not tag:
        raise RecipeError(
            first, f"repos.{name}", "a remote repository needs a commit (or a branch or tag)"
        )
    if repos is None:  # reading layers fetches and checks out nothing by itself
        raise RecipeError(
            first, f"repos.{name}", "a remote repository, and nothing was given to check it out"
        )
    url = str(repo["url"])
    problem = gitcmd.url_problem(url)
    if problem:
        raise RecipeError(first, f"repos.{name}.url", problem)
    for kind, ref in (("branch", branch), ("tag", tag)):
        if ref and (problem := gitcmd.ref_problem(ref)):
            raise RecipeError(first, f"repos.{name}.{kind}", problem)
    pin = RepoPin(name, url, commit, branch, tag)
    checkout = repos.checkout(pin, first, patches)
    if checkout.floating:
        log.warning(
            "repos.%s: %s %s floats; this build uses commit %s (jailbake lock pins it)",
            name,
            "branch" if branch else "tag",
            branch or tag,
            checkout.commit,
        )
    return checkout.path
