"""What an analysis job records per sample, declared once.

A job states its per-sample record as a :class:`Schema`: a list of fields, each a
:class:`Field` with a name and a kind, optionally nested under a :class:`Group` (one
sub-record per word, per pair, ...). From it :class:`~.analysis_job.AnalysisJob` derives

* the record written by ``measure`` (:meth:`Schema.write`: the fields in the declared
  order, each value with its standard error as ``<name>_stderr`` right after it);
* the record read back on resume (:meth:`Schema.read`: a standard error saved as JSON
  null, undefined, reads back as NaN; that is the one place it is done);
* the metric updates: the job's ``update_metrics`` reads the *read* records, in both
  the measured and the resumed path, so a resumed run feeds its metrics exactly what
  an uninterrupted one does.

Kinds: "text" (a string, a list of strings, any JSON value kept as it is), "value" (a
float), "values" (a list of floats), "flag" (a bool), "count" (an int). ``stderr``: the field has a
standard error; ``map``: the job also computes a per-pixel map of it (drawn as a
figure, or exported); ``optional``: the value may be missing for a sample (written as
null). A field a sample does not provide at all is left out of its record (a word its
caption does not hold).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from ..measurement import saved_number

__all__ = ["Field", "Group", "Schema", "KINDS"]

KINDS = ("text", "value", "values", "flag", "count")


@dataclass(frozen=True)
class Field:
    """One named entry of a record (see the module doc for the kinds)."""

    name: str
    kind: str = "value"
    stderr: bool = False
    map: bool = False
    optional: bool = False

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"Field {self.name!r}: kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if self.stderr and self.kind not in ("value", "values"):
            raise ValueError(f"Field {self.name!r}: only values carry a standard error")

    def write(self, value: Any) -> Any:
        """The JSON form of a sample's value (a value with a standard error is a pair)."""
        if value is None:
            if not self.optional:
                raise ValueError(f"record field {self.name!r} is not optional")
            return None
        if self.kind == "value":
            return float(value)
        if self.kind == "values":
            return value.tolist() if hasattr(value, "tolist") else [float(v) for v in value]
        if self.kind == "flag":
            return bool(value)
        if self.kind == "count":
            return int(value)
        return value


@dataclass(frozen=True)
class Group:
    """A dict of sub-records under ``name``, one per key (e.g. per word), each of ``fields``;
    ``stderrs_last``: a sub-record lists every value first, then every standard error."""

    name: str
    fields: tuple[Field, ...]
    stderrs_last: bool = False


class Schema:
    """The per-sample record of a job: ``id`` first, then ``entries`` in order."""

    def __init__(self, entries: Iterable[Field | Group]):
        self.entries = tuple(entries)
        names = [e.name for e in self.entries]
        if "id" in names or len(set(names)) != len(names):
            raise ValueError(f"record fields must be unique and not 'id', got {names}")

    def write(self, sample: dict) -> dict:
        """The record of one sample: ``sample`` maps "id" and field names to values, a
        value with a standard error as (value, stderr); a group to {key: sub-sample}."""
        record = {"id": int(sample["id"])}
        for entry in self.entries:
            if entry.name not in sample:
                continue
            if isinstance(entry, Group):
                record[entry.name] = {key: _write_fields(entry.fields, sub, entry.stderrs_last)
                                      for key, sub in sample[entry.name].items()}
            else:
                record.update(_write_fields((entry,), sample))
        return record

    def read(self, record: dict) -> dict:
        """A saved record with every standard error a float (null, undefined, is NaN)."""
        out = dict(record)
        for entry in self.entries:
            if entry.name not in record:
                continue
            if isinstance(entry, Group):
                out[entry.name] = {key: {**sub, **_read_fields(entry.fields, sub)}
                                   for key, sub in record[entry.name].items()}
            else:
                out.update(_read_fields((entry,), record))
        return out

    def fields(self) -> list[Field]:
        """Every field, those of groups included."""
        return [f for e in self.entries for f in (e.fields if isinstance(e, Group) else (e,))]


def _write_fields(fields: Sequence[Field], sample: dict, stderrs_last: bool = False) -> dict:
    out, stderrs = {}, {}
    for f in fields:
        if f.name not in sample:
            continue
        value = sample[f.name]
        if f.stderr:
            value, stderr = value
            out[f.name] = f.write(value)
            (stderrs if stderrs_last else out)[f"{f.name}_stderr"] = Field(f.name, f.kind).write(stderr)
        else:
            out[f.name] = f.write(value)
    return {**out, **stderrs}


def _read_fields(fields: Sequence[Field], record: dict) -> dict:
    """The standard errors of ``fields`` in ``record``, as floats (null: NaN)."""
    out = {}
    for f in fields:
        key = f"{f.name}_stderr"
        if f.stderr and key in record:
            se = record[key]
            out[key] = [saved_number(v) for v in se] if isinstance(se, list) else saved_number(se)
    return out
