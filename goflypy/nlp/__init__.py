"""The FAQ robot: text clean-up, retrieval over the FAQ and the reply decision.

Public names:

``Robot(thresholds=Thresholds(...), index_dir=Path | None)``
    ``warm_up()`` loads jieba's dictionary, the retail words and the synonym
    table; it blocks for about a second, so call it once from a thread.
    ``rebuild(entries)`` replaces the index with ``entries`` (list of
    ``FaqEntry``); with ``index_dir`` set it reuses the saved index when its
    fingerprint matches and otherwise builds and saves one. ``upsert(entry)``
    and ``remove(faq_id)`` follow single edits. All three block and are
    thread-safe: writers are serialised and a rebuild swaps in a whole new
    index, so ``decide`` never sees a half-built one.
    ``decide(text) -> Decision`` blocks on CPU work (run it in a worker
    thread) and never raises for any input string. ``thresholds`` may be
    replaced at run time.
``Thresholds(answer, suggest, margin)``
    Scores in 0..1 (cosine fused with word coverage, then blended with word
    order and length, see ``rerank``): at or above ``answer`` the robot
    answers when the runner-up trails by more than ``margin``, at or above
    ``suggest`` it suggests the top candidates, below it hands off. A question
    about an unknown sibling of one of the FAQ's own terms is handed off
    whatever its score. Category rules (``Lexicon``) give texts naming goods
    their topics; an entry about other goods of a topic than the question is
    scored down and never answered, and when the best entries name different
    goods and the question none, the robot suggests.
``Decision``
    ``action`` is one of "answer", "suggest", "handoff", "greeting", "human";
    ``reply`` is the text for the visitor; ``faq_id`` is set for "answer";
    ``score`` is the best cosine (0 for intents and empty input);
    ``candidates`` holds up to three ``Candidate`` records, best first;
    ``held_back`` names why the best entry was not answered when a rule, not
    a threshold, stopped it; ``to_dict()`` returns a JSON-ready dict.
``evaluate(robot, queries) -> dict``
    Routes labelled queries as a live chat does (order questions to the order
    system, the rest to ``robot.decide``) and reports top-1, recall@3,
    correct action and hand-off rates (see ``evaluate.DEFINITION``).
"""

from .evaluate import evaluate
from .robot import Candidate, Decision, Robot, Thresholds

__all__ = ["Candidate", "Decision", "Robot", "Thresholds", "evaluate"]
