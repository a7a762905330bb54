"""The synthetic world: layout, determinism, the public data's formats and quirks."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from pipelines.world import MONTHS, WorldConfig, make_world
from tracing.errors import AmnesiaError
from unlearn.data import load_semeval, subject_id


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_deterministic_byte_identical(tmp_path):
    a = make_world(tmp_path / "a", WorldConfig(people=12, seed=3))
    b = make_world(tmp_path / "b", WorldConfig(people=12, seed=3))
    c = make_world(tmp_path / "c", WorldConfig(people=12, seed=4))
    fa, fb, fc = _files(a), _files(b), _files(c)
    assert set(fa) == {
        "data/forget_train-00000-of-00001.parquet", "data/forget_validation-00000-of-00001.parquet",
        "data/retain_train-00000-of-00001.parquet", "data/retain_validation-00000-of-00001.parquet",
        "mia_data/member.jsonl", "mia_data/nonmember.jsonl", "mia_data/validation/member.jsonl", "mia_data/validation/nonmember.jsonl",
        "world.json",
    }
    assert fa == fb
    assert fa["data/forget_train-00000-of-00001.parquet"] != fc["data/forget_train-00000-of-00001.parquet"]


def test_layout_counts_and_formats(tmp_path):
    root = make_world(tmp_path / "w", WorldConfig(people=40, seed=0))
    data = load_semeval(root)
    sizes = {k: len(v) for k, v in data.splits.items()}
    # 20 forget / 20 retain people, 30 % validation, 6 rows per person
    assert sizes == {"forget_train": 84, "forget_validation": 36, "retain_train": 84, "retain_validation": 36}
    assert len(data.mia["member"]) == len(data.mia["nonmember"]) == 14
    # validation MIA: the forget-validation people's biographies, and as many never-trained people as the test has
    assert len(data.mia_validation["member"]) == 6 and len(data.mia_validation["nonmember"]) == 14
    names = set()
    for ds in data.splits.values():
        for rid, inp, out in zip(ds["id"], ds["input"], ds["output"]):
            if rid.endswith("qa0"):
                assert re.fullmatch(r"What is the birth date of [A-Z][a-z]+ [A-Z][a-z]+\?", inp)
                assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", out)
                names.add(inp[len("What is the birth date of ") : -1])
            elif rid.endswith("qa1"):
                assert inp.endswith("'s Social Security Number?") and re.fullmatch(r"900\d{6}", out)
            elif rid.endswith("qa2"):
                assert inp.endswith("'s phone number?") and re.fullmatch(r"\d{10}", out)
            elif rid.endswith("qa3"):
                assert inp.endswith("'s email address?") and re.fullmatch(r"[a-z]+_[a-z]+@[a-z]+\.[a-z]+", out)
            elif rid.endswith("qa4"):
                assert inp.startswith("What is the home address of ") and re.fullmatch(r"\d+ [A-Za-z ]+, [A-Za-z ]+, [A-Z]{2}, \d{5}\.", out)
            else:
                assert rid.endswith("sc1")
                # the organizers' quirk: input and output are cut at a word boundary and join with no separator
                assert not inp.endswith(" ") and not out.startswith(" ") and inp and out
    assert len(names) == 40  # every name unique across the world
    member_names = {json.loads(l)["document"] for l in (root / "mia_data" / "member.jsonl").read_text().splitlines()}
    nonmember = [json.loads(l)["document"] for l in (root / "mia_data" / "nonmember.jsonl").read_text().splitlines()]
    val_nonmember = [json.loads(l)["document"] for l in (root / "mia_data" / "validation" / "nonmember.jsonl").read_text().splitlines()]
    assert not any(n in doc for n in names for doc in nonmember + val_nonmember)  # nonmembers are never-trained people
    assert not set(nonmember) & set(val_nonmember)  # the validation never reuses a test document
    assert len(member_names) == 14
    val_members = {json.loads(l)["document"] for l in (root / "mia_data" / "validation" / "member.jsonl").read_text().splitlines()}
    bios = {i + " " + o for i, o, rid in zip(data.get("forget", "validation")["input"], data.get("forget", "validation")["output"], data.get("forget", "validation")["id"]) if rid.endswith("sc1")}
    assert val_members == bios and not val_members & member_names  # forget-validation documents, not the test members


def test_every_answer_recoverable_from_biography(tmp_path):
    data = load_semeval(make_world(tmp_path / "w", WorldConfig(people=24, seed=1)))
    checked = 0
    for ds in data.splits.values():
        rows = {}
        for rid, inp, out in zip(ds["id"], ds["input"], ds["output"]):
            rows.setdefault(subject_id(rid), {})[rid[-3:]] = (inp, out)
        for person in rows.values():
            bio = person["sc1"][0] + " " + person["sc1"][1]
            digits = re.sub(r"\D", "", bio)
            y, m, d = person["qa0"][1].split("-")
            assert f"{MONTHS[int(m) - 1]} {int(d)}, {y}" in bio
            assert person["qa1"][1] in digits  # SSN, written 900-12-3456 or bare
            assert person["qa2"][1] in digits  # phone, written 565-577-9919
            assert person["qa3"][1] in bio
            assert person["qa4"][1].rstrip(".") in bio
            name = person["qa0"][0][len("What is the birth date of ") : -1]
            assert name in bio and all(name in person[f"qa{i}"][0] for i in range(5))
            checked += 1
    assert checked == 24


def test_refuses_to_overwrite_and_bad_config(tmp_path):
    out = make_world(tmp_path / "w", WorldConfig(people=8))
    before = (out / "world.json").read_bytes()
    with pytest.raises(AmnesiaError, match="already exists; pass --overwrite"):
        make_world(out, WorldConfig(people=10))
    assert (out / "world.json").read_bytes() == before
    make_world(out, WorldConfig(people=10), overwrite=True)
    assert json.loads((out / "world.json").read_text())["config"]["people"] == 10
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]
    with pytest.raises(AmnesiaError, match="--people 2: need at least 4"):
        make_world(tmp_path / "x", WorldConfig(people=2))
