"""Small benchmark files in the public formats (GSM8K jsonl, a BBH folder, EQ-Bench v2 json), written
by the tests themselves: no item of the real benchmarks is copied."""

import json


def write_benchmarks(folder):
    gsm = folder / "gsm8k.jsonl"
    gsm.write_text("\n".join(json.dumps(x) for x in [
        {"question": "Tom has 3 apples and buys 4 more. How many apples?", "answer": "3 + 4 = 7\n#### 7"},
        {"question": "A box holds 12 eggs. How many eggs in 2 boxes?", "answer": "12 * 2 = 24\n#### 24"},
        {"question": "Sam had 1,000 coins and spent 1. How many are left?", "answer": "#### 999"},
    ]) + "\n")
    bbh = folder / "bbh"
    bbh.mkdir(exist_ok=True)
    (bbh / "boolean_expressions.json").write_text(json.dumps({"examples": [
        {"input": "not ( True ) and ( True ) is", "target": "False"},
        {"input": "True or False is", "target": "True"}]}))
    (bbh / "logical_deduction_three_objects.json").write_text(json.dumps({"examples": [
        {"input": "Three books.\nOptions:\n(A) The red book is leftmost\n(B) The blue book is leftmost", "target": "(B)"}]}))
    (bbh / "navigate.json").write_text(json.dumps({"examples": [
        {"input": "Take 1 step. Take 1 step back.\nOptions:\n- Yes\n- No", "target": "Yes"}]}))
    (bbh / "object_counting.json").write_text(json.dumps({"examples": [
        {"input": "I have a flute and two drums. How many instruments?", "target": "3"}]}))
    eq = folder / "eq.json"
    question = ("\nYour task is to predict the likely emotional responses of a character in this dialogue:\n\n"
                "Ann: I won.\nBo: Well done.\n[End dialogue]\n\nAt the end of this dialogue, Ann would feel...\n"
                "Proud\nSad\nBored\nAngry\n\nGive each ...\n")
    ref = {"emotion1": "Proud", "emotion2": "Sad", "emotion3": "Bored", "emotion4": "Angry",
           "emotion1_score": "8", "emotion2_score": 0, "emotion3_score": 0, "emotion4_score": "1"}
    eq.write_text(json.dumps({"1": {"prompt": question, "reference_answer": ref, "reference_answer_fullscale": ref}}))
    return gsm, bbh, eq
