"""MME: answers matched to the ground truth, the official result files, acc / acc+ per subtask and the sums."""

import json
import re

import pytest

from twigvlm.eval import eval_mme
from twigvlm.eval.eval_mme import yes_no

YES_NO = "Please answer yes or no."
SHORT = "Answer the question using a single word or phrase."


@pytest.mark.parametrize("answer, reading", [
    ("Yes", "yes"), ("no", "no"), ("Yes, there is.", "yes"), ("No.", "no"),
    ("Not really", "no"),  # "not " holds "no"
    ("I think yes", "other"),  # only the first 4 characters are looked at
    ("", "other"),
])
def test_yes_no_reading(answer, reading):
    assert yes_no(answer) == reading


# subtask -> image -> [(question, truth, answer)]
CASES = {
    "existence": {  # flat layout: <image>.txt beside <image>.jpg
        "1": [("Is there a dog in this image?", "Yes", "Yes"), ("Is there a cat in this image?", "No", "No")],
        "2": [("Is there a car in this image?", "Yes", "No"), ("Is there a bus in this image?", "No", "no")],
    },
    "artwork": {  # images/ and questions_answers_YN/
        "10": [("Is this by Monet?", "Yes", "Yes"), ("Is this by Manet?", "No", "No")],
        "11": [("Is this a portrait?", "Yes", "yes"), ("Is this a landscape?", "No", "Maybe")],
        "12": [("Is this oil?", "Yes", "Yes"), ("Is this ink?", "No", "No")],
    },
    "code_reasoning": {  # a cognition subtask, flat layout
        "20": [("Does it print 3?", "Yes", "Yes"), ("Does it print 4?", "No", "Yes")],
    },
}


@pytest.fixture
def mme_dir(tmp_path, write_jsonl, make_answer):
    data, answers = tmp_path / "MME_Benchmark_release_version", []
    for subtask, images in CASES.items():
        qa_dir = data / subtask / "questions_answers_YN" if subtask == "artwork" else data / subtask
        qa_dir.mkdir(parents=True)
        if subtask == "artwork":
            (data / subtask / "images").mkdir()
        for image, questions in images.items():
            # The ground truth of image 12 has two spaces before the yes/no instruction, as some MME files do.
            spaces = "  " if image == "12" else " "
            lines = [f"{q}{spaces}{YES_NO}\t{truth}\n" for q, truth, _ in questions]
            (qa_dir / f"{image}.txt").write_text("".join(lines))
            for number, (q, _, said) in enumerate(questions):
                # LLaVA's question file words MME questions either way: as the ground truth, or short-answer style
                prompt = f"{q}{spaces}{YES_NO}" if number == 0 else f"{q}\n{SHORT}"
                answers.append(make_answer(f"{subtask}/{image}.jpg", said, prompt))
    write_jsonl(tmp_path / "answers" / "llava-v1.5-7b.jsonl", answers)
    return tmp_path


def run(mme_dir):
    return eval_mme.main(["--experiment", "llava-v1.5-7b", "--mme-dir", str(mme_dir),
                          "--scores-dir", str(mme_dir / "scores")])


def test_acc_and_acc_plus_per_subtask_and_sums(mme_dir):
    scores = run(mme_dir)["metrics"]
    existence, artwork = scores["subtasks"]["existence"], scores["subtasks"]["artwork"]
    # existence: 3 of 4 answers right -> acc 75; image 1 wholly right, image 2 not -> acc+ 1/2 = 50; 75 + 50 = 125
    assert (existence["acc"], existence["acc_plus"], existence["score"]) == pytest.approx((75.0, 50.0, 125.0))
    # artwork: 5 of 6 right ("Maybe" reads "other") -> 83.33; images 10 and 12 of 3 -> 66.67; sum 150
    assert (artwork["acc"], artwork["acc_plus"], artwork["score"]) == pytest.approx((500 / 6, 200 / 3, 150.0))
    # code_reasoning: 1 of 2 right -> acc 50; its one image not wholly right -> acc+ 0; 50
    assert scores["subtasks"]["code_reasoning"]["score"] == pytest.approx(50.0)
    # perception: existence and artwork, 125 + 150 = 275; cognition: code_reasoning, 50; total 325
    assert (scores["perception"], scores["cognition"], scores["total"]) == pytest.approx((275.0, 50.0, 325.0))
    assert len(scores["missing_subtasks"]) == 11


def test_official_result_files(mme_dir):
    run(mme_dir)
    results = mme_dir / "eval_tool" / "answers" / "llava-v1.5-7b"
    assert sorted(p.name for p in results.iterdir()) == ["artwork.txt", "code_reasoning.txt", "existence.txt"]
    lines = (results / "existence.txt").read_text().splitlines()
    assert lines[0] == f"1.txt\tIs there a dog in this image? {YES_NO}\tYes\tYes"
    assert lines[1] == f"1.txt\tIs there a cat in this image? {YES_NO}\tNo\tNo"  # short-answer prompt rewritten
    assert (results / "artwork.txt").read_text().splitlines()[5] == f"12.txt\tIs this ink?  {YES_NO}\tNo\tNo"


def test_the_headline_is_perception_plus_cognition_and_perception_alone_is_saved_and_printed_beside_it(
        mme_dir, capsys):
    run(mme_dir)
    saved = json.loads((mme_dir / "scores" / "mme" / "llava-v1.5-7b.json").read_text())
    assert saved["score"] == pytest.approx(325.0)  # the pruning papers' MME
    assert saved["metrics"]["perception"] == pytest.approx(275.0)  # LLaVA-1.5's MME
    cells = [re.split(r"\s{2,}", line) for line in capsys.readouterr().out.splitlines() if line.startswith("= ")]
    printed = {row[0]: row[-1] for row in cells}
    assert printed == {"= perception (LLaVA-1.5's MME)": "275.00", "= cognition": "50.00",
                       "= perception + cognition (pruning papers' MME)": "325.00"}
