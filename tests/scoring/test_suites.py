import json

import pytest

from rys_search.scoring.suites import SuiteError, load_suites


def test_builtin_suites_have_disjoint_splits_of_the_promised_size():
    suites = load_suites()
    assert {"math", "eq", "reasoning"} <= set(suites)
    for name in ("math", "reasoning"):
        search, held = suites[name].items("search"), suites[name].items("heldout")
        assert len(search) >= 200 and len(held) >= 200
        assert not {i.prompt for i in search} & {i.prompt for i in held}
        assert len({i.prompt for i in search}) == len(search)
    eq = suites["eq"]
    assert eq.items("search") and eq.items("heldout")
    assert not {i.prompt for i in eq.items("search")} & {i.prompt for i in eq.items("heldout")}


def test_generated_suites_are_deterministic_by_seed(tmp_path):
    first = load_suites()["math"].items("search")
    again = load_suites()["math"].items("search")
    assert [(i.prompt, i.answer) for i in first] == [(i.prompt, i.answer) for i in again]
    text = (load_suites()["math"].path).read_text().replace("name = \"math\"", "name = \"math2\"")
    (tmp_path / "math2.toml").write_text(text.replace("seed = 20261122", "seed = 7"))
    other = load_suites([tmp_path])["math2"].items("search")
    assert [i.prompt for i in other] != [i.prompt for i in first]


def test_generated_answers_are_right():
    items = load_suites()["math"].items("search")
    for item in items:
        q = item.prompt.splitlines()[-1]
        if " * " in q and " - " not in q:
            a, b = q.removeprefix("What is ").rstrip("?").split(" * ")
            assert int(a) * int(b) == int(item.answer)
        elif "cube root" in q:
            assert int(item.answer) ** 3 == int(q.split()[-1].rstrip("?"))
    reasoning = load_suites()["reasoning"].items("heldout")
    assert {i.meta["task"] for i in reasoning} == {"ordering", "swaps", "arithmetic", "boolean", "navigation"}
    for item in reasoning:
        assert item.scorer == "digits" or item.answer in item.options


def test_a_user_suite_needs_no_code(tmp_path):
    (tmp_path / "capitals.toml").write_text(
        'name = "capitals"\nversion = 3\nsource = "capitals.jsonl"\nscorer = "choice"\n'
        'prompt = "What is the capital of {country}?{options_line}"\n'
    )
    lines = [
        {"id": "fr", "country": "France", "answer": "Paris", "options": ["Lyon", "Paris"], "split": "search"},
        {"id": "it", "country": "Italy", "answer": "Rome", "options": ["Rome", "Milan"], "split": "heldout"},
    ]
    (tmp_path / "capitals.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    suite = load_suites([tmp_path])["capitals"]
    assert suite.version == 3
    [item] = suite.items("search")
    assert item.prompt == "What is the capital of France?\nOptions: Lyon, Paris" and item.answer == "Paris"


@pytest.mark.parametrize(
    "toml, jsonl, message",
    [
        ('name = "s"\nversion = 1\nsource = "s.jsonl"\nscorer = "digits"\nprompt = "{question}"\ncolour = 1\n',
         '{"question": "1+1", "answer": "2"}\n', "unknown keys colour"),
        ('name = "s"\nversion = 1\nsource = "s.jsonl"\nscorer = "digits"\nprompt = "{question}"\n',
         '{"question": "1+1", "answer": "2"}\n{"question": "2+2", "answer": 4\n', "s.jsonl:2: not valid JSON"),
        ('name = "s"\nversion = 1\nsource = "s.jsonl"\nscorer = "digits"\nprompt = "{question} {colour}"\n',
         '{"question": "1+1", "answer": "2"}\n', "has no field 'colour'"),
        ('name = "s"\nversion = 1\nsource = "s.jsonl"\nscorer = "digits"\nprompt = "{question}"\n',
         '{"question": "1+1", "answer": "two"}\n', "whole-number answer"),
        ('name = "s"\nversion = 1\nsource = "gone.jsonl"\nscorer = "digits"\nprompt = "{question}"\n',
         "", "gone.jsonl does not exist"),
        ('name = "s"\nversion = 1\nsource = "s.jsonl"\nscorer = "vibes"\nprompt = "{question}"\n',
         "", "unknown scorer 'vibes'"),
        ('name = "math"\nversion = 1\nsource = "s.jsonl"\nscorer = "digits"\nprompt = "{question}"\n',
         "", "defined twice"),
    ],
)
def test_bad_suites_are_refused_with_file_and_line(tmp_path, toml, jsonl, message):
    (tmp_path / "s.toml").write_text(toml)
    (tmp_path / "s.jsonl").write_text(jsonl)
    with pytest.raises(SuiteError, match=message):
        for suite in load_suites([tmp_path]).values():
            suite.items("search")
