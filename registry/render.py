"""Terminal rendering of registry views for the CLI (rich tables; `--json` bypasses this)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from rich.console import Console
from rich.table import Table

from registry.integrity import RebuildReport, VerifyReport
from registry.schemas import AliasEventPublic, AliasState, ModelPublic, ModelState, VersionPublic


def _when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S.%f UTC")


def _version(version: int | None, weight: int | None = None) -> str:
    if version is None:
        return "-"
    return f"v{version}" if weight is None else f"v{version} ({weight}%)"


def _aliases(states: Sequence[AliasState]) -> str:
    return ", ".join(f"{s.alias}→{_version(s.version, s.weight)}" for s in states) or "-"


def models(console: Console, rows: Sequence[tuple[ModelPublic, list[AliasState]]]) -> None:
    table = Table("model", "versions", "aliases", "created", "description")
    for model, states in rows:
        table.add_row(
            model.name,
            str(model.last_version),
            _aliases(states),
            _when(model.created_at),
            model.description,
        )
    console.print(table if rows else "no models registered")


def versions(console: Console, rows: Sequence[VersionPublic]) -> None:
    table = Table("version", "status", "dataset sha256", "metrics", "parent", "created", "by")
    for v in rows:
        parent = f"{v.parent.model} v{v.parent.version}" if v.parent else "-"
        table.add_row(
            f"v{v.version}",
            v.status,
            v.dataset_sha256[:16],
            _metrics(v.metrics),
            parent,
            _when(v.created_at),
            v.created_by,
        )
    console.print(table if rows else "no versions")


def version(console: Console, v: VersionPublic) -> None:
    fields: list[tuple[str, Any]] = [
        ("model", v.model),
        ("version", v.version),
        ("status", v.status + (f" ({v.status_reason})" if v.status_reason else "")),
        ("dataset sha256", v.dataset_sha256),
        ("dataset source", v.dataset_uri or "-"),
        ("code revision", v.code_revision or "-"),
        ("parent", f"{v.parent.model} v{v.parent.version}" if v.parent else "-"),
        ("created", f"{_when(v.created_at)} by {v.created_by or '-'}"),
        ("updated", _when(v.updated_at)),
        ("tags", ", ".join(f"{k}={val}" for k, val in v.tags.items()) or "-"),
    ]
    table = Table(show_header=False, box=None)
    for key, value in fields:
        table.add_row(f"[bold]{key}[/]", str(value))
    console.print(table)
    _mapping(console, "hyperparameters", v.hyperparameters)
    _mapping(console, "metrics", v.metrics)
    artifacts = Table(
        "artifact", "format", "bytes", "sha256", title="artifacts", title_justify="left"
    )
    for a in v.artifacts:
        artifacts.add_row(a.path, a.format, f"{a.size:,}", a.sha256)
    console.print(artifacts)


def history(console: Console, events: Sequence[AliasEventPublic]) -> None:
    table = Table("#", "when", "alias", "action", "from", "to", "actor", "reason")
    for e in events:
        table.add_row(
            str(e.id),
            _when(e.created_at),
            e.alias,
            e.action,
            _version(e.from_version, e.from_weight),
            _version(e.to_version, e.weight),
            e.actor,
            e.reason,
        )
    console.print(table if events else "no alias changes")


def state(console: Console, s: ModelState) -> None:
    console.print(f"[bold]{s.model}[/] at {_when(s.at)}: {_aliases(s.aliases)}")
    for v in s.versions:
        console.print(
            f"  v{v.version}: dataset {v.dataset_sha256} from {v.dataset_uri or '-'}, "
            f"code {v.code_revision or '-'}, hyperparameters {v.hyperparameters}"
        )


def verify(console: Console, report: VerifyReport) -> None:
    if report.ok:
        console.print(
            f"[green]ok[/] {report.model} v{report.version}: {report.files_checked} files match"
        )
        return
    console.print(
        f"[red]FAILED[/] {report.model} v{report.version}: {len(report.problems)} problems"
    )
    for p in report.problems:
        detail = f" (expected {p.expected}, found {p.actual})" if p.expected or p.actual else ""
        console.print(f"  {p.kind.value}: {p.path}{detail}")


def rebuild(console: Console, report: RebuildReport) -> None:
    table = Table("path", "outcome", "detail")
    for e in report.entries:
        table.add_row(e.path, e.outcome.value, e.detail)
    console.print(table if report.entries else "no version directories with manifests found")


def _metrics(metrics: dict[str, Any]) -> str:
    shown = [
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in list(metrics.items())[:3]
    ]
    return ", ".join(shown) or "-"


def _mapping(console: Console, title: str, values: dict[str, Any]) -> None:
    table = Table("name", "value", title=title, title_justify="left")
    for key, value in sorted(values.items()):
        table.add_row(key, str(value))
    console.print(table)
