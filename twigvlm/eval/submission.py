"""Answer files converted for the official graders (GQA's eval.py, the VQAv2 and MMBench servers, MM-Vet's grader):
the logic behind the thin CLIs scripts/convert_{gqa_for_eval,vqav2_for_submission,mmbench_for_submission,
mmvet_for_eval}.py, which keep LLaVA's flags and paths.

The converters of server-graded benchmarks also save a score file (the score left null, see
`twigvlm.eval.scores` to record the server's) so that the answers' speed statistics are kept.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from twigvlm.eval.answer_normalization import normalize_answer, parse_option_letter
from twigvlm.eval.files import read_jsonl, write_json
from twigvlm.eval.scores import DEFAULT_SCORES_DIR, publish


# GQA ---------------------------------------------------------------------------------------------------------------

def gqa_predictions(answers: list[dict]) -> list[dict]:
    """[{"questionId", "prediction"}], the answer lower-cased without trailing periods, as LLaVA converts."""
    return [{"questionId": answer["question_id"], "prediction": answer["text"].rstrip(".").lower()}
            for answer in answers]


def convert_gqa(src: str | Path, dst: str | Path) -> list[dict]:
    predictions = gqa_predictions(read_jsonl(src))
    write_json(dst, predictions)
    return predictions


# MM-Vet ------------------------------------------------------------------------------------------------------------

def mmvet_results(answers: list[dict]) -> dict[str, str]:
    """{"v1_<question_id>": answer}, the keys of MM-Vet's grader."""
    return {f"v1_{answer['question_id']}": answer["text"] for answer in answers}


def convert_mmvet(src: str | Path, dst: str | Path, experiment: str,
                  scores_dir: str | Path = DEFAULT_SCORES_DIR) -> dict[str, str]:
    results = mmvet_results(read_jsonl(src))
    write_json(dst, results, indent=2)
    publish("mmvet", experiment, None, {"answers": len(results)}, src, scores_dir)
    return results


# VQAv2 -------------------------------------------------------------------------------------------------------------

def vqav2_submission(answers: list[dict], test_questions: list[dict]) -> list[dict]:
    """One {"question_id", "answer"} per question of the whole test2015 split, in its order, as the server wants
    even for test-dev: the normalised answer where there is one (LLaVA answers the test-dev questions only), ""
    elsewhere. Answers to ids outside the split are dropped."""
    given = {answer["question_id"]: answer["text"] for answer in answers}
    return [{"question_id": question["question_id"],
             "answer": normalize_answer(given[question["question_id"]]) if question["question_id"] in given else ""}
            for question in test_questions]


def convert_vqav2(vqav2_dir: str | Path, split: str, ckpt: str,
                  scores_dir: str | Path = DEFAULT_SCORES_DIR) -> Path:
    """<dir>/answers/<split>/<ckpt>/merge.jsonl -> <dir>/answers_upload/<split>/<ckpt>.json, the questions being
    those of <dir>/llava_vqav2_mscoco_test2015.jsonl."""
    vqav2_dir = Path(vqav2_dir)
    src = vqav2_dir / "answers" / split / ckpt / "merge.jsonl"
    dst = vqav2_dir / "answers_upload" / split / f"{ckpt}.json"
    answers = read_jsonl(src, skip_broken=True)  # a chunk killed mid-line costs its line, not the submission
    questions = read_jsonl(vqav2_dir / "llava_vqav2_mscoco_test2015.jsonl")
    submission = vqav2_submission(answers, questions)
    write_json(dst, submission)
    answered_ids = {answer["question_id"] for answer in answers}
    answered = sum(question["question_id"] in answered_ids for question in questions)
    publish("vqav2", ckpt, None, {"answers": len(answers), "questions": len(questions), "answered": answered},
            src, scores_dir)
    print(f"upload {dst} to the VQAv2 server")
    return dst


# MMBench -----------------------------------------------------------------------------------------------------------

MMBENCH_DROPPED_COLUMNS = ("hint", "category", "source", "image", "comment", "l2-category")
CIRCULAR_COPY_STRIDE = 1_000_000  # MMBench's circular copies of a question have indices i, i + 1e6, i + 2e6, ...


def mmbench_submission(questions: pd.DataFrame, answers: list[dict]) -> pd.DataFrame:
    """The question table without its hint, category, source, image, comment and l2-category columns, with a
    "prediction" column after D (index, question, A, B, C, D, prediction, answer, ... for the dev set).
    As LLaVA's converter, the last answer line of an index is its prediction: with `--all-rounds`, the last round's,
    whose letter names an option of the last rotation, not of the table."""
    sheet = questions.drop(columns=[column for column in MMBENCH_DROPPED_COLUMNS if column in questions.columns])
    last_line = {answer["question_id"]: answer["text"] for answer in answers}  # later lines overwrite earlier ones
    sheet.insert(sheet.columns.get_loc("D") + 1, "prediction", sheet["index"].map(last_line))
    return sheet


def mmbench_circular_accuracy(sheet: pd.DataFrame) -> dict | None:
    """Local accuracy where the table has answers (the dev set): a question counts when the letter read from the
    prediction is right in all its circular copies. The server may differ a little: it also matches answers
    that give the option's text instead of its letter."""
    if "answer" not in sheet.columns or sheet["answer"].isna().all():
        return None
    right = [isinstance(prediction, str) and parse_option_letter(prediction) == answer
             for prediction, answer in zip(sheet["prediction"], sheet["answer"])]
    per_question = pd.Series(right).groupby((sheet["index"] % CIRCULAR_COPY_STRIDE).to_numpy()).all()
    return {"circular_accuracy": 100.0 * per_question.mean(), "questions": len(per_question), "rows": len(sheet),
            "answered": int(sheet["prediction"].notna().sum())}


def convert_mmbench(annotation_file: str | Path, result_dir: str | Path, upload_dir: str | Path, experiment: str,
                    scores_dir: str | Path = DEFAULT_SCORES_DIR) -> pd.DataFrame:
    """<result-dir>/<experiment>.jsonl -> <upload-dir>/<experiment>.xlsx (what the server takes) and .tsv."""
    answers_file = Path(result_dir) / f"{experiment}.jsonl"
    answers = read_jsonl(answers_file)
    if any(answer.get("round_id", 0) > 0 for answer in answers):
        print("note: answers of --all-rounds; as LLaVA's converter, each question's last round is submitted (its "
              "letter names an option of that round's rotation)")
    sheet = mmbench_submission(pd.read_table(annotation_file), answers)
    upload_dir = Path(upload_dir)
    upload_dir.mkdir(parents=True, exist_ok=True)
    sheet.to_excel(upload_dir / f"{experiment}.xlsx", index=False, engine="openpyxl")
    sheet.to_csv(upload_dir / f"{experiment}.tsv", sep="\t", index=False)
    accuracy = mmbench_circular_accuracy(sheet)
    metrics = accuracy or {"rows": len(sheet), "answered": int(sheet["prediction"].notna().sum())}
    score = accuracy["circular_accuracy"] if accuracy else None
    publish("mmbench", experiment, score, metrics, answers_file, scores_dir)
    print(f"upload {upload_dir / f'{experiment}.xlsx'} to the MMBench server")
    return sheet
