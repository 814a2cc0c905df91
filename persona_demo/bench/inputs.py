"""The inputs every bench figure times: huffpost_headline dev questions when the folder is given, else
synthetic articles, so the bench runs anywhere."""

from __future__ import annotations

from pathlib import Path


def synthetic_articles(n: int) -> list[str]:
    topics = ["city budget", "storm damage", "school board", "film festival", "tech layoffs", "election"]
    return [
        f"Article {i}: officials discussed the {topics[i % len(topics)]} on day {i}, with residents "
        f"raising concerns about costs, timelines and who will pay for the plan in the coming year."
        for i in range(n)
    ]


def load_examples(data_dir: Path | None, n: int) -> list[tuple[str, list[str], object]]:
    """(prompt, history, LaMP example or None) from huffpost_headline dev, else synthetic."""
    if data_dir and (Path(data_dir) / "dev_questions.json").is_file():
        from ..tasks.lamp import load_split

        dataset = load_split(data_dir, "dev")
        return [(e.input, dataset.spec.history_texts(e.profile), e) for e in dataset.examples[:n]]
    articles = synthetic_articles(n + 20)
    return [
        (f"Generate a headline for the following article: {a}", articles[i + 1 : i + 19], None)
        for i, a in enumerate(articles[:n])
    ]
