"""Result files: strict JSON that any reader accepts, readable by all."""
import json
import math
import stat

from infodiff_lightning.io import json_line, write_json_atomic


def refuse_nan(token):  # json.loads accepts bare NaN/Infinity unless told otherwise
    raise ValueError(f"not JSON: {token}")


def test_undefined_values_are_written_as_null_not_bare_nan(tmp_path):
    # A term seen in one image has no spread over images: its stderr is NaN in memory,
    # and must be null in the file (bare NaN is not JSON and breaks other readers).
    path = write_json_atomic(tmp_path / "summary.json", {"cmi/dog": {"mean": 1.5, "stderr": math.nan},
                                                        "bounds": [1.0, math.inf, -math.inf]})
    data = json.loads(path.read_text(), parse_constant=refuse_nan)
    assert data == {"cmi/dog": {"mean": 1.5, "stderr": None}, "bounds": [1.0, None, None]}


def test_summary_is_readable_by_all_like_the_other_outputs(tmp_path):
    path = write_json_atomic(tmp_path / "summary.json", {"a": 1})
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_jsonl_records_are_strict_json_lines():
    line = json_line({"id": 3, "stderr": math.nan})
    assert line.endswith("\n") and line.count("\n") == 1
    assert json.loads(line, parse_constant=refuse_nan) == {"id": 3, "stderr": None}
