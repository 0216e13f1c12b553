"""Time robot decisions on a 5,000-entry FAQ beside jieba segmentation alone.

Run: .venv/bin/python -m bench.robot_latency [--entries 5000] [--queries 1000]
Prints p50/p99 per decision, p50/p99 per jieba cut (with the same text
clean-up) of the same queries in the same run, timed alternately query by
query, and their ratio.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable

from goflypy.models import FaqEntry
from goflypy.nlp import Robot
from goflypy.nlp.normalize import normalize_text

_GOODS = [
    "草莓",
    "樱桃",
    "香蕉",
    "芒果",
    "鸡蛋",
    "牛奶",
    "大米",
    "猪肉",
    "牛肉",
    "鸡翅",
    "虾",
    "螃蟹",
    "苹果",
    "葡萄",
    "橙子",
    "柚子",
    "西瓜",
    "土豆",
    "番茄",
    "黄瓜",
    "白菜",
    "菠菜",
    "蘑菇",
    "豆腐",
    "面包",
    "酸奶",
    "饮料",
    "零食",
    "茶叶",
    "咖啡",
]
_TOPICS = [
    "怎么保存",
    "能放几天",
    "怎么挑选",
    "是哪里产的",
    "多少钱一斤",
    "有没有优惠",
    "怎么退货",
    "坏了怎么办",
    "什么时候补货",
    "能不能包邮",
    "怎么开发票",
    "多久能送到",
    "可以自提吗",
    "有没有农药",
    "怎么做好吃",
    "能放冰箱吗",
    "要冷链吗",
    "分量不够怎么办",
    "能货到付款吗",
    "保质期多久",
]
_NOISE = ("请问", "亲，", "你好，", "", "", "")


def build_faq(size: int, rng: random.Random) -> list[FaqEntry]:
    """Return ``size`` entries: goods × topics, numbered once the pairs run out."""
    entries = []
    for n in range(size):
        goods = _GOODS[n % len(_GOODS)]
        topic = _TOPICS[(n // len(_GOODS)) % len(_TOPICS)]
        batch = n // (len(_GOODS) * len(_TOPICS))
        label = f"{goods}{batch}号" if batch else goods
        entries.append(
            FaqEntry(f"faq-{n}", f"{label}{topic}", f"关于{label}{topic}的答复")
        )
    rng.shuffle(entries)
    return entries


def build_queries(count: int, rng: random.Random) -> list[str]:
    """Return shopper-like questions with fillers and punctuation."""
    return [
        rng.choice(_NOISE)
        + rng.choice(_GOODS)
        + rng.choice(_TOPICS)
        + rng.choice("？?！ ")
        for _ in range(count)
    ]


def percentile(values: list[float], share: float) -> float:
    """Return the ``share`` quantile of ``values`` (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def time_each(func: Callable[[str], object], queries: list[str]) -> list[float]:
    """Return the seconds each call of ``func`` took."""
    timings = []
    for query in queries:
        started = time.perf_counter()
        func(query)
        timings.append(time.perf_counter() - started)
    return timings


def time_pairs(
    first: Callable[[str], object], second: Callable[[str], object], queries: list[str]
) -> tuple[list[float], list[float]]:
    """Time ``first`` and ``second`` on each query in turn, side by side.

    Alternating per query gives both the same machine conditions, so a burst
    of load elsewhere lands on both series alike.
    """
    times_first: list[float] = []
    times_second: list[float] = []
    for query in queries:
        times_first += time_each(first, [query])
        times_second += time_each(second, [query])
    return times_first, times_second


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=5000)
    parser.add_argument("--queries", type=int, default=1000)
    args = parser.parse_args()
    rng = random.Random(7)

    robot = Robot()
    robot.warm_up()
    started = time.perf_counter()
    robot.rebuild(build_faq(args.entries, rng))
    build_s = time.perf_counter() - started
    queries = build_queries(args.queries, rng)
    tokenizer = robot.lexicon._tokenizer

    # The same clean-up and cut that a decision starts with, minus the cache
    # that lets a decision reuse its clean-up: every baseline call pays in full.
    normalize = normalize_text.__wrapped__

    def segment(text: str) -> list[str]:
        return list(tokenizer.cut(normalize(text), HMM=False))

    # Warm both paths on other questions, then time them side by side.
    warm = build_queries(50, random.Random(11))
    time_pairs(robot.decide, segment, warm)
    decide, cut = time_pairs(robot.decide, segment, queries)

    ms = 1000.0
    p50_d, p99_d = percentile(decide, 0.5) * ms, percentile(decide, 0.99) * ms
    p50_c, p99_c = percentile(cut, 0.5) * ms, percentile(cut, 0.99) * ms
    print(f"FAQ entries: {args.entries}, index built in {build_s:.1f} s")
    print(f"queries: {len(queries)}")
    mean_d = statistics.mean(decide) * ms
    print(f"decision    p50 {p50_d:.3f} ms  p99 {p99_d:.3f} ms  mean {mean_d:.3f} ms")
    print(f"jieba cut   p50 {p50_c:.3f} ms  p99 {p99_c:.3f} ms")
    print(f"ratio decision p99 / jieba p99: {p99_d / p99_c:.1f}")
    print(f"ratio decision p50 / jieba p50: {p50_d / p50_c:.1f}")


if __name__ == "__main__":
    main()
