from bench.natural import right_at_wrong


def _row(kind, chance, span, gold=("Murdock",)):
    return {"kind": kind, "gold": list(gold),
            "verification": {"answerable_chance": chance, "best_span": span}}


def test_right_at_a_fixed_share_of_wrong_answers_reads_every_threshold():
    rows = [_row("who", 0.9, "Ian Murdock"), _row("who", 0.8, "Bruce Perens"),
            _row("when", 0.7, "Murdock"), _row("unanswerable", 0.6, "1993"),
            _row("who", 0.5, "Murdock"), _row("yesno", 0.95, "no"),
            _row("instruction", 0.99, "anything")]
    got = right_at_wrong(rows, caps=(0.0, 0.25, 0.5))
    # four answerable questions: no wrong answer allows only the first
    assert got["0.0"] == {"right": 0.25, "wrong": 0.0, "unanswerable_answered": 0}
    # one wrong answer of four: the lowest threshold answers all, an unanswerable one too
    assert got["0.25"] == {"right": 0.75, "wrong": 0.25, "unanswerable_answered": 1}
    assert got["0.5"] == got["0.25"]


def test_questions_of_one_chance_are_answered_together():
    rows = [_row("who", 0.7, "Ian Murdock"), _row("who", 0.7, "Bruce Perens")]
    assert right_at_wrong(rows, caps=(0.0,))["0.0"] == {"right": 0.0, "wrong": 0.0,
                                                       "unanswerable_answered": 0}


def test_the_ceiling_counts_where_an_answer_is_found(seed_settings, tmp_path):
    import json

    from bench.ceiling import measure, span_questions

    items = [
        {"id": "a", "question": "How many North Korean personnel have been deployed to Russia?",
         "answers": ["15,000"], "kind": "how-many", "unanswerable": False, "follows": None},
        {"id": "b", "question": "Which city hosted the summit?", "answers": ["Ulaanbaatar"],
         "kind": "where", "unanswerable": False, "follows": None},
        {"id": "c", "question": "and how many were killed?", "answers": ["600"],
         "kind": "followup", "unanswerable": False, "follows": "a"},
        {"id": "d", "question": "Summarize the deployment", "answers": ["Kursk", "15,000"],
         "kind": "instruction", "unanswerable": False, "follows": None},
        {"id": "e", "question": "Who won the 1998 World Cup?", "answers": [],
         "kind": "unanswerable", "unanswerable": True, "follows": None},
    ]
    path = tmp_path / "questions.jsonl"
    path.write_text("".join(json.dumps(i) + "\n" for i in items))
    questions = span_questions(path)
    assert [q["id"] for q in questions] == ["a", "b"]  # no follow-up, request or unanswerable
    got = measure(seed_settings, questions)
    # the seeds hold 15,000 and the reader finds it; no seed names Ulaanbaatar
    assert got["questions"] == 2 and got["k"] == 5
    assert got["recall_at_k"] == 0.5 and got["best_span"] == got["printed"] == 0.5
    assert got["by_kind"] == {"how-many": {"n": 1, "best_span": 1, "printed": 1},
                              "where": {"n": 1, "best_span": 0, "printed": 0}}
