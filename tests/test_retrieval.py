"""BM25 / recency ranking and LaMP's RAG prompts (templates, joins, truncation budget)."""

from __future__ import annotations

import math

import pytest

from persona_demo.errors import PersonaDemoError
from persona_demo.tasks.lamp import LAMP2_TAGS, LampExample, extract_query
from persona_demo.tasks.retrieval import (
    bm25_query,
    bm25_scores,
    build_rag_prompt,
    extract_strings_between_quotes,
    rank_profile,
    retrieve,
)

INPUTS = {
    1: 'For an author who has written the paper with the title "Deep Nets", which reference is related? '
    'Just answer with [1] or [2] without explanation. [1]: "Shallow Trees" [2]: "Deep Forests"',
    2: "Which tag does this movie relate to among the following tags? Just answer with the tag name without "
    f"further explanation. tags: [{', '.join(LAMP2_TAGS)}] description: A robot falls in love.",
    3: "What is the score of the following review on a scale of 1 to 5? just answer with 1, 2, 3, 4, or 5 "
    "without further explanation. review: Great strings.",
    4: "Generate a headline for the following article: Markets rose today.",
    5: "Generate a title for the following abstract of a paper: We propose X.",
    6: "Generate a subject for the following email: Meeting at 5.",
    7: "Paraphrase the following tweet without any explanation before or after it: a b",
}
NEW = {
    "id": "n",
    "title": "T1",
    "abstract": "A1",
    "description": "D1",
    "tag": "comedy",
    "text": "X1",
    "score": "4",
}
OLD = {
    "id": "o",
    "title": "T0",
    "abstract": "A0",
    "description": "D0",
    "tag": "action",
    "text": "X0",
    "score": "2",
}


def example(task: int, profile: list[dict]) -> LampExample:
    return LampExample("q1", "u1", INPUTS[task], extract_query(task, INPUTS[task]), profile)


IDF = math.log(3.5 / 1.5)  # a word in 1 of 4 documents
FLOOR = 0.25 * (3 * IDF / 5)  # "a" (in 3 of 4) has negative idf -> 0.25 * mean idf over {a, b, c, d, e}


def test_bm25_scores_hand_example() -> None:
    corpus = [["a", "b"], ["a", "c"], ["a", "d"], ["e", "e"]]
    # every document has length 2 = avgdl, so tf-saturation is tf * 2.5 / (tf + 1.5)
    assert bm25_scores(["a", "b"], corpus) == pytest.approx([FLOOR + IDF, FLOOR, FLOOR, 0.0])
    assert bm25_scores(["e"], corpus) == pytest.approx([0, 0, 0, IDF * 2 * 2.5 / 3.5])
    assert bm25_scores(["b", "b"], corpus)[0] == pytest.approx(2 * IDF)  # repeated query terms count twice
    assert bm25_scores(["A"], corpus) == [0.0] * 4  # case-sensitive, like LaMP's str.split()
    assert bm25_scores(["a"], []) == [] and bm25_scores(["a"], [[], []]) == [0.0, 0.0]


def test_bm25_ranking_and_tie_order() -> None:
    profile = [{"id": str(i), "text": t} for i, t in enumerate(["a b", "a c", "a d", "e e"])]
    ranked = rank_profile(7, example(7, profile), "bm25")
    # 0 wins; 1 and 2 tie -> the later item first (LaMP's reversed stable argsort); 3 scores 0
    assert [p["id"] for p in ranked] == ["0", "2", "1", "3"]
    assert [p["id"] for p in retrieve(7, example(7, profile), 2)] == ["0", "2"]


def test_bm25_lamp1_query_is_the_two_reference_titles() -> None:
    ex = example(1, [])
    assert extract_strings_between_quotes(ex.input) == ["Deep Nets", "Shallow Trees", "Deep Forests"]
    assert bm25_query(1, ex) == "Shallow Trees Deep Forests"
    assert bm25_query(4, example(4, [])) == "Markets rose today."
    profile = [
        {"id": "p0", "title": "Deep Nets", "abstract": "Nets are deep"},
        {"id": "p1", "title": "Random Forests", "abstract": "Forests of Trees"},
        {"id": "p2", "title": "On Graphs", "abstract": "Graph theory"},
    ]
    assert rank_profile(1, example(1, profile))[0]["id"] == "p1"


def test_recency_newest_first_with_lamp_tie_order() -> None:
    profile = [
        {"id": "year", "text": "t", "date": "2019"},
        {"id": "day1", "text": "t", "date": "2019-05-01"},
        {"id": "nodate", "text": "t"},
        {"id": "day2", "text": "t", "date": "2019-05-01"},
        {"id": "bad", "text": "t", "date": "May 2019"},
        {"id": "old", "text": "t", "date": "2018-12-31"},
    ]
    ranked = [p["id"] for p in rank_profile(7, example(7, profile), "recency")]
    assert ranked == ["day2", "day1", "year", "old", "bad", "nodate"]


def test_ranker_errors() -> None:
    with pytest.raises(PersonaDemoError, match="unknown ranker"):
        rank_profile(7, example(7, []), "random")  # type: ignore[arg-type]
    with pytest.raises(PersonaDemoError, match="k must be"):
        retrieve(7, example(7, []), -1)


@pytest.mark.parametrize(
    ("task", "prefix"),
    [
        (2, 'the tag for the movie: "D1" is "comedy" , and the tag for the movie: "D0" is "action" . '),
        (3, '4 is the score for "X1" , and 2 is the score for "X0" . '),
        (4, '"T1" is the title for "X1" , and "T0" is the title for "X0" . '),
        (5, '"T1" is a title for "A1" , and "T0" is a title for "A0" . Following the given patterns '),
        (6, '"T1" is the title for "X1" , and "T0" is the title for "X0" . '),
        (7, '"X1" , and "X0"  are written by a person. Following the given patterns '),
    ],
)
def test_rag_prompt_templates(task: int, prefix: str) -> None:
    profile = [{**OLD, "date": "2020-01-01"}, {**NEW, "date": "2020-02-01"}]
    assert build_rag_prompt(task, example(task, profile), 2, ranker="recency") == prefix + INPUTS[task]


def test_rag_prompt_lamp1_splices_titles_after_the_word_title() -> None:
    profile = [{**OLD, "date": "2020-01-01"}, {**NEW, "date": "2020-02-01"}]
    prompt = build_rag_prompt(1, example(1, profile), 2, ranker="recency")
    assert prompt == INPUTS[1].replace('the title "Deep Nets"', 'the title, and "T1", and "T0" "Deep Nets"')


def test_rag_prompt_without_items_is_the_input() -> None:
    assert build_rag_prompt(4, example(4, []), 3) == INPUTS[4]
    assert build_rag_prompt(4, example(4, [NEW]), 0, max_length=500) == INPUTS[4]


TWEET = INPUTS[7]  # 78 characters
TWEETS = [
    {"id": "a", "text": "aaaaaaaaaa", "date": "2020-01-03"},
    {"id": "b", "text": "cc", "date": "2020-01-02"},
    {"id": "c", "text": "dddddddddddddddddddd", "date": "2020-01-01"},
]
GLUE = "  are written by a person. Following the given patterns "


def test_rag_prompt_character_budget_exact() -> None:
    ex = example(7, TWEETS)
    # room 170 - 78 = 92; minus glue (55) and two joins (12) -> 25 // 3 = 8 per item, frame '"" ' takes 3:
    # a gets 5 chars, b uses 2 of 5 (3 carried over), c gets 8 - 3 + 3 = 8
    prompt = build_rag_prompt(7, ex, 3, ranker="recency", max_length=170)
    assert prompt == '"aaaaa" , and "cc" , and "dddddddd"' + GLUE + TWEET
    assert len(prompt) == 169
    assert build_rag_prompt(7, ex, 3, ranker="recency", max_length=400) == build_rag_prompt(
        7, ex, 3, "recency"
    )


def test_rag_prompt_fits_max_length_when_input_fits_its_share() -> None:
    ex = example(7, TWEETS)
    for max_length in range(160, 260):
        assert len(build_rag_prompt(7, ex, 3, ranker="recency", max_length=max_length)) <= max_length


def test_rag_prompt_too_small_budget_falls_back_like_lamp() -> None:
    ex = example(7, TWEETS)
    assert build_rag_prompt(7, ex, 3, ranker="recency", max_length=20) == TWEET  # never fits -> bare input
    # 150: the frames do not fit at input share 0.6 or 0.5; at 0.4 the items get 90 - 67 = 23 (7 each)
    assert (
        build_rag_prompt(7, ex, 3, "recency", max_length=150)
        == '"aaaa" , and "cc" , and "dddddd"' + GLUE + TWEET
    )


def test_rag_prompt_token_budget_cuts_whole_words() -> None:
    def words(s: str) -> int:
        return len(s.split())

    long_text = " ".join(f"w{i}" for i in range(30))
    profile = [{"id": "p", "title": "Head Line", "text": long_text, "date": "2020"}]
    ex = example(4, profile)
    prompt = build_rag_prompt(4, ex, 1, tokenizer_len=words, max_length=20)
    # room 20 - 10 input words = 10; glue "." = 1 word -> 9; frame '"Head Line" is the title for "" ' = 7 words
    assert prompt == '"Head Line" is the title for "w0 w1" . ' + INPUTS[4]
    assert words(prompt) <= 20


def test_prompt_builder_fits_only_prompts_over_the_limit_and_keeps_the_question() -> None:
    """`fit`: a prompt the row would cut is rebuilt with LaMP's budget (the question stays whole); a prompt
    within the limit is the unbudgeted one, exactly (plugs trained on it read the same text)."""
    from persona_demo.tasks.retrieval import rag_prompt_builder

    def words(s: str) -> int:
        return len(s.split())

    long_text = " ".join(f"w{i}" for i in range(30))
    ex = example(4, [{"id": "p", "title": "Head Line", "text": long_text, "date": "2020"}])
    plain = rag_prompt_builder(4, [ex], 1)(0, 0)
    assert plain.endswith(INPUTS[4]) and "Markets" not in plain.split()[:20]  # a cut at 20 loses the article
    fitted = rag_prompt_builder(4, [ex], 1, fit=(words, 20))(0, 0)
    assert fitted == '"Head Line" is the title for "w0 w1" . ' + INPUTS[4]
    assert words(fitted) <= 20
    assert rag_prompt_builder(4, [ex], 1, fit=(words, 100))(0, 0) == plain
