"""`[retention]`: the retention classes, the flag -> class rules, and the purger's pace."""

from __future__ import annotations

from dataclasses import dataclass

from agent.schema import in_range, pattern, setting

CLASS_RE = r"[a-z][a-z0-9_-]{0,31}"


@dataclass(frozen=True)
class RetentionClass:
    """[[retention.classes]]: a retention class and how long its local copy stays."""

    name: str = setting(doc="class name, e.g. evidence", check=pattern(CLASS_RE, CLASS_RE))
    keep_days: float = setting(
        0.0,
        doc="days the local copy is kept after upstream ack; never less than "
        "policy.local_retention_days",
        check=in_range(0),
    )


@dataclass(frozen=True)
class RetentionRule:
    """[[retention.rule]]: clips carrying `flag` (and of `media_type`, if set) get a class."""

    flag: str = setting(doc="a clip flag, e.g. marked", check=pattern(r"\S+", "a flag name"))
    retention_class: str = setting(doc="the class given, one of retention.classes")
    media_type: str = setting(
        "", doc="only clips of this media type", choices=("", "video", "audio", "photo")
    )


def _default_classes() -> list[RetentionClass]:
    return [
        RetentionClass("routine", 0.0),
        RetentionClass("evidence", 90.0),
        RetentionClass("long_term", 90.0),
    ]


def _default_rules() -> list[RetentionRule]:
    return [RetentionRule("marked", "evidence")]


@dataclass(frozen=True)
class RetentionSection:
    """[retention]: retention classes of clips (MANIFEST retention_class) and local purging."""

    default_class: str = setting("routine", doc="class of a clip no rule matches")
    classes: list[RetentionClass] = setting(
        default_factory=_default_classes, doc="the retention classes and their local keep days"
    )
    rule: list[RetentionRule] = setting(
        default_factory=_default_rules,
        doc="flag -> class rules; of all matching rules the longest-kept class wins",
    )
    purge_interval_s: float = setting(
        60.0, doc="seconds between passes of the local-copy purger", check=in_range(0.1)
    )

    def keep_days(self, name: str) -> float:
        """The configured local keep days of class `name` (0 when unknown)."""
        return next((c.keep_days for c in self.classes if c.name == name), 0.0)


def retention_problems(ret: RetentionSection) -> list[str]:
    names = [c.name for c in ret.classes]
    problems = [
        f"retention.classes: class {n!r} defined twice"
        for n in sorted(set(names))
        if names.count(n) > 1
    ]
    known = ", ".join(names) or "(none)"
    if ret.default_class not in names:
        problems.append(f"retention.default_class = {ret.default_class!r}: expected one of {known}")
    for i, rule in enumerate(ret.rule):
        if rule.retention_class not in names:
            problems.append(
                f"retention.rule[{i}].retention_class = {rule.retention_class!r}: "
                f"expected one of {known}"
            )
    return problems
