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
