"""Free-form answers turned into the forms the benchmarks compare.

`normalize_answer` is the VQA answer normaliser of the EvalAI servers in the form LLaVA applies it (its
`EvalAIAnswerProcessor`): TextVQA scores normalised predictions against normalised annotations, and the VQAv2
submission carries normalised answers. `parse_option_letter` reads a multiple-choice answer as LLaVA's ScienceQA
scorer does.
"""

from __future__ import annotations

import re

# Deleted where they touch a space ("well - known" -> "well known"), replaced by a space elsewhere
# ("t-shirt" -> "t shirt"). Commas and question marks never get here (deleted first), periods have their own rule.
WORD_SPLITTING_MARKS = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", "!")

# A period goes unless a digit follows it: "yes." -> "yes", "e.g." -> "eg", "2.5" stays.
# (The official pattern reads "(?!<=\d)(\.)(?!\d)": its first group is a look-AHEAD for "<=digit", always true
# before a period, so only the look-ahead for a digit acts.)
PERIOD_NOT_BEFORE_DIGIT = re.compile(r"\.(?!\d)")

NUMBER_WORDS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
                "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
ARTICLES = {"a", "an", "the"}

# The official table maps each of these written with ONE apostrophe missing back to the full form
# ("dont" -> "don't", "couldnt've" and "couldn'tve" -> "couldn't've"). Left out of it, as they cannot act here:
# its capitalised keys ("Im", "Ive", "Id've": the text is lower-cased first), two identities ("let's", "she's")
# and one reversed entry ("somebody'd" -> "somebodyd").
CONTRACTED_FORMS = """
    ain't aren't can't could've couldn't couldn't've didn't doesn't don't hadn't hadn't've hasn't haven't he'd
    he'd've he's how'd how'll how's isn't it'd it'd've it'll ma'am mightn't mightn't've might've mustn't must've
    needn't not've o'clock oughtn't 'ow's'at shan't she'd've should've shouldn't shouldn't've somebody'd've
    somebody'll somebody's someone'd someone'd've someone'll someone's something'd something'd've something'll
    that's there'd there'd've there're there's they'd they'd've they'll they're they've 'twas wasn't we'd've we've
    weren't what'll what're what's what've when's where'd where's where've who'd who'd've who'll who's who've
    why'll why're why's won't would've wouldn't wouldn't've y'all y'all'll y'all'd've you'd you'd've you'll
    you're you've
""".split()


def _missing_one_apostrophe(form: str) -> list[str]:
    return [form[:i] + form[i + 1:] for i, char in enumerate(form) if char == "'"]


CONTRACTIONS = {variant: form for form in CONTRACTED_FORMS for variant in _missing_one_apostrophe(form)}


def _tokenize(answer: str) -> str:
    """Lower case; commas ("1,000" -> "1000") and question marks deleted; "'s" split off ("man's" -> "man 's")."""
    answer = answer.lower().replace(",", "").replace("?", "").replace("'s", " 's")
    return answer.replace("\n", " ").replace("\t", " ").strip()


def _strip_punctuation(answer: str) -> str:
    out = answer
    for mark in WORD_SPLITTING_MARKS:
        # Decided on the text as it came in, mark by mark, as the official code does.
        touches_space = mark + " " in answer or " " + mark in answer
        out = out.replace(mark, "" if touches_space else " ")
    return PERIOD_NOT_BEFORE_DIGIT.sub("", out)


def _normalize_words(answer: str) -> str:
    words = [NUMBER_WORDS.get(word, word) for word in answer.split()]
    return " ".join(CONTRACTIONS.get(word, word) for word in words if word not in ARTICLES)


def normalize_answer(answer: str) -> str:
    """The EvalAI VQA normal form: "The Two dogs." -> "2 dogs", "Yes." -> "yes", "dont" -> "don't"."""
    return _normalize_words(_strip_punctuation(_tokenize(answer)))


OPTION_LETTERS = ("A", "B", "C", "D", "E")
# "." is any character here, as in LLaVA: "The answer is B." is read, a bare "The answer is B" at the very end is not.
ANSWER_IS = re.compile(r"The answer is ([A-Z]).")


def parse_option_letter(text: str) -> str | None:
    """The letter a multiple-choice answer picks, read as LLaVA does: exactly "A", or starting with "A. ", or
    containing "The answer is A." exactly once; None otherwise (LLaVA's "FAILED": "A." alone, "a", "(A)")."""
    if text in OPTION_LETTERS:
        return text
    if len(text) >= 3 and text[0] in OPTION_LETTERS and text[1:3] == ". ":
        return text[0]
    found = ANSWER_IS.findall(text)
    return found[0] if len(found) == 1 else None
