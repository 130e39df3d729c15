"""The EvalAI VQA answer normaliser (TextVQA, VQAv2) and LLaVA's reading of multiple-choice letters."""

import pytest

from twigvlm.eval.answer_normalization import CONTRACTIONS, normalize_answer, parse_option_letter


@pytest.mark.parametrize("raw, normal", [
    # case and the final period
    ("Yes.", "yes"), ("YES", "yes"), ("yes", "yes"),
    # articles go, wherever they are
    ("The dog", "dog"), ("a man in an apple shirt", "man in apple shirt"),
    # commas are deleted before anything else: digits stay together
    ("1,000", "1000"), ("red, white", "red white"),
    # a period stays only before a digit
    ("2.5", "2.5"), ("2.5.", "2.5"), ("e.g.", "eg"), ("3. apples", "3 apples"),
    # number words up to ten become digits ("none" too)
    ("two", "2"), ("Ten cats", "10 cats"), ("none", "0"), ("eleven", "eleven"),
    # contractions written without their apostrophe get it back
    ("dont", "don't"), ("I dont know", "i don't know"), ("couldnt've", "couldn't've"), ("yall", "y'all"),
    # marks split words, but vanish where they touch a space
    ("t-shirt", "t shirt"), ("well - known", "well known"), ("(left)", "left"), ("on/off", "on off"),
    # question marks go, "'s" is split off, other marks stay
    ("What?", "what"), ("man's hat", "man 's hat"), ("10%", "10%"), ("a:b", "a:b"),
    # white space of any kind is one space
    ("  Two\nDogs\t", "2 dogs"),
])
def test_normal_form(raw, normal):
    assert normalize_answer(raw) == normal


def test_digit_comma_rule_acts_through_the_early_comma_deletion():
    # The official rule deletes (rather than spaces out) every mark once a digit,comma,digit is seen. Commas being
    # deleted first in LLaVA's normaliser, "/" here is spaced out as anywhere else.
    assert normalize_answer("1,000 m/s") == "1000 m s"


def test_contraction_table_maps_each_missing_apostrophe():
    assert CONTRACTIONS["couldn'tve"] == CONTRACTIONS["couldnt've"] == "couldn't've"
    assert CONTRACTIONS["'ows'at"] == CONTRACTIONS["ow's'at"] == CONTRACTIONS["'ow'sat"] == "'ow's'at"
    assert "shed" not in CONTRACTIONS and "well" not in CONTRACTIONS  # real words are not contractions
    assert len(CONTRACTIONS) == 113


@pytest.mark.parametrize("text, letter", [
    ("A", "A"), ("E", "E"),
    ("B. a cat", "B"),  # letter, period, space
    ("The answer is C.", "C"), ("Because of X. The answer is D. Done", "D"),
    ("A.", None),  # too short for the "A. " rule: LLaVA reads nothing here
    ("a", None), ("(A)", None), ("F", None),
    ("The answer is B", None),  # the pattern wants one more character after the letter
    ("The answer is A. Or: The answer is B.", None),  # two readings: none
])
def test_option_letter_as_llava_reads_it(text, letter):
    assert parse_option_letter(text) == letter
