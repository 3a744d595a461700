"""The git state of the code a run used: commit, branch, dirty flag and the uncommitted diff."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

MAX_DIFF_CHARS = 2_000_000  # a diff this big is data checked in by mistake; keep the record small
_TIMEOUT_S = 20


def _git(repo_root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, GIT_OPTIONAL_LOCKS="0", LC_ALL="C")  # no index.lock while runs read
    return subprocess.run(
        ["git", "-c", "core.quotepath=off", *args],
        cwd=repo_root,
        capture_output=True,
        text=True,
        errors="replace",
        env=env,
        timeout=_TIMEOUT_S,
    )


def git_state(repo_root: Path) -> dict[str, Any]:
    """Commit, branch, dirty flag, diff of uncommitted changes and untracked files of `repo_root`.

    Never raises for a missing git, a directory outside any repo, or a repo with no commits:
    those give commit None and a `note` saying why.
    """
    state: dict[str, Any] = {
        "commit": None,
        "branch": None,
        "dirty": False,
        "diff": "",
        "untracked": [],
        "note": None,
    }
    try:
        inside = _git(repo_root, "rev-parse", "--is-inside-work-tree")
    except FileNotFoundError:
        state["note"] = "git is not installed"
        return state
    except (OSError, subprocess.TimeoutExpired) as exc:
        state["note"] = f"git failed: {exc}"
        return state
    if inside.returncode != 0 or inside.stdout.strip() != "true":
        state["note"] = f"{repo_root} is not inside a git work tree"
        return state

    head = _git(repo_root, "rev-parse", "--verify", "-q", "HEAD")
    has_commits = head.returncode == 0
    if has_commits:
        state["commit"] = head.stdout.strip()
    else:
        state["note"] = "the repository has no commits yet"

    branch = _git(repo_root, "symbolic-ref", "--short", "-q", "HEAD")
    if branch.returncode == 0 and branch.stdout.strip():
        state["branch"] = branch.stdout.strip()
    if state["branch"] is None and has_commits:
        state["note"] = "detached HEAD"

    if has_commits:
        diff = _git(repo_root, "diff", "--no-color", "--no-ext-diff", "HEAD").stdout
    else:  # nothing to compare with: staged changes against the empty tree, then unstaged ones
        staged = _git(repo_root, "diff", "--no-color", "--no-ext-diff", "--cached").stdout
        unstaged = _git(repo_root, "diff", "--no-color", "--no-ext-diff").stdout
        diff = staged + unstaged
    untracked_out = _git(repo_root, "ls-files", "--others", "--exclude-standard", "-z").stdout
    untracked = [p for p in untracked_out.split("\0") if p]

    if untracked:
        listing = "".join(f"#   {p}\n" for p in untracked)
        diff += f"# untracked files ({len(untracked)}), not in the diff above:\n{listing}"
    if len(diff) > MAX_DIFF_CHARS:
        diff = diff[:MAX_DIFF_CHARS] + f"\n# diff truncated at {MAX_DIFF_CHARS} characters\n"
    state["diff"] = diff
    state["untracked"] = untracked
    state["dirty"] = bool(diff)
    return state
