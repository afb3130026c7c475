"""grade / grade_batch in both modes, the reward components, and their Hydra configs."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf
from omegaconf.errors import MissingMandatoryValue

from dapo_lab.reward import FunctionReward, Grade, MathReward, SymbolicChecker, grade, grade_batch, summarize

CONF = Path(__file__).resolve().parents[2] / "conf" / "reward"
REASONING = "Let me think step by step. " * 20  # 540 characters of reasoning before the answer


def respond(answer: str) -> str:
    return f"{REASONING}\nSo that is it.\nAnswer: {answer}"


@pytest.fixture(scope="module")
def checker():
    with SymbolicChecker(workers=1, timeout_s=5.0) as c:
        yield c


# (response's answer, ground truth, correct in mode "dapo", correct in mode "symbolic")
CASES = [
    ("$45$", "45", True, True),
    ("045", "45", True, True),
    ("45", "045", True, True),
    (r"\boxed{\frac12}", r"\frac{1}{2}", True, True),
    (r"x = \frac{1}{2} \text{ cm}", r"\frac{1}{2}", True, True),
    ("1,000,000", "1000000", True, True),
    ("0.5", r"\frac{1}{2}", False, True),
    ("1/2", "0.5", False, True),
    (r"\sqrt{8}", r"2\sqrt{2}", False, True),
    ("(3, pi/2)", r"\left( 3, \frac{\pi}{2} \right)", False, True),
    (r"50\%", "0.5", False, True),
    ("1/2", "2", False, False),
    ("x+1", "x-1", False, False),
    ("(1,2)", "(2,1)", False, False),
    ("44", "45", False, False),
    # Minerva keeps only the text after the last "=": the paper's grader then matches "0" with a plane
    ("0", "5x - 7y + 11z + 4 = 0", True, False),
]


@pytest.mark.parametrize("answer,truth,dapo,symbolic", CASES, ids=[f"{a} vs {t}" for a, t, _, _ in CASES])
def test_grades_in_both_modes(answer, truth, dapo, symbolic, checker):
    for mode, expected in (("dapo", dapo), ("symbolic", symbolic)):
        g = grade(respond(answer), truth, mode=mode, checker=checker)
        assert (g.correct, g.score) == (expected, 1.0 if expected else -1.0), mode
        assert g.extracted == answer


def test_the_last_answer_counts_not_one_inside_the_reasoning(checker):
    response = "First guess. Answer: 7\nHmm, I made an error; recomputing.\nAnswer: 8"
    for mode in ("dapo", "symbolic"):
        assert grade(response, "7", mode=mode, checker=checker).correct is False
        assert grade(response, "8", mode=mode, checker=checker).correct is True


def test_an_answer_only_in_the_first_300_characters_is_not_seen(checker):
    response = "Answer: 7\n" + "and now a long afterthought. " * 20
    for mode in ("dapo", "symbolic"):
        g = grade(response, "7", mode=mode, checker=checker)
        assert g == Grade(correct=False, score=-1.0, extracted=None, status="no_answer")


def test_boxed_counts_only_in_symbolic_mode(checker):
    response = REASONING + r"Therefore the answer is $\boxed{\frac{\sqrt{3}}{2}}$."
    assert grade(response, r"\frac{\sqrt3}{2}", mode="dapo").status == "no_answer"
    g = grade(response, r"\frac{\sqrt3}{2}", mode="symbolic", checker=checker)
    assert (g.correct, g.extracted) == (True, r"\frac{\sqrt{3}}{2}")


def test_symbolic_grade_says_how_it_decided(checker):
    string_match, by_sympy, two_integers = grade_batch(
        [respond("45"), respond("0.5"), respond("44")], ["45", "1/2", "45"], mode="symbolic", checker=checker
    )
    assert (string_match.symbolic, by_sympy.symbolic, two_integers.symbolic) == (False, True, False)
    assert by_sympy.status == "correct" and two_integers.status == "wrong"


def test_plain_numbers_and_fractions_are_decided_exactly_without_workers():
    # a checker that must not be called: these pairs never reach sympy
    class NoSympy(SymbolicChecker):
        def check(self, pairs):
            raise AssertionError(f"sent to sympy: {pairs}")

    pairs = [("0.5", r"\frac{1}{2}"), ("2/4", r"\dfrac{1}{2}"), (r"\frac{2}{3}", "2/3"),
             (r"\frac{2}{3}", r"\frac{3}{2}"), ("7", "7.0"), ("3", "-3"), ("5/2", "2")]  # fmt: skip
    grades = grade_batch(
        [respond(a) for a, _ in pairs], [t for _, t in pairs], mode="symbolic", checker=NoSympy(workers=0)
    )
    assert [g.correct for g in grades] == [True, True, True, False, True, False, False]


def test_decimals_that_differ_still_go_to_sympy_for_its_rounding(checker):
    (g,) = grade_batch([respond("0.3333333")], ["1/3"], mode="symbolic", checker=checker)
    assert (g.correct, g.symbolic) == (True, True)


def test_parse_failures_are_incorrect_and_counted(checker):
    grades = grade_batch([respond("I do not know."), respond("3")], ["3", "3"], mode="symbolic", checker=checker)
    assert [g.status for g in grades] == ["parse_failure", "correct"]
    metrics = summarize(grades)
    assert (metrics["reward/parse_failures"], metrics["reward/accuracy"]) == (1.0, 0.5)


def test_grade_batch_keeps_order_and_checks_its_arguments():
    responses = [respond(str(i)) for i in range(50)]
    truths = [str(i if i % 3 else i + 1) for i in range(50)]
    assert [g.correct for g in grade_batch(responses, truths)] == [i % 3 != 0 for i in range(50)]
    with pytest.raises(ValueError, match="2 responses but 1 ground truths"):
        grade_batch(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="unknown reward mode 'exact'"):
        grade_batch(["a"], ["a"], mode="exact")


def test_grade_batch_starts_and_stops_its_own_workers_without_a_checker():
    grades = grade_batch([respond("0.5"), respond("3")], ["1/2", "4"], mode="symbolic", workers=1)
    assert [g.status for g in grades] == ["correct", "wrong"]


def test_grade_symbolic_without_a_checker_uses_the_shared_worker():
    assert grade(respond("0.25"), r"\frac14", mode="symbolic").correct


def test_summarize_by_hand():
    grades = [
        Grade(True, 1.0, "1", "correct", symbolic=True),
        Grade(False, -1.0, None, "no_answer"),
        Grade(False, -1.0, "x", "timeout", symbolic=True),
        Grade(False, -1.0, "2", "wrong"),
    ]
    assert summarize(grades) == {
        "reward/accuracy": 0.25,
        "reward/no_answer_frac": 0.25,
        "reward/symbolic_checks": 2.0,
        "reward/symbolic_rescued": 1.0,
        "reward/timeouts": 1.0,
        "reward/parse_failures": 0.0,
    }
    assert summarize([])["reward/accuracy"] == 0.0


def test_math_reward_scores_with_its_configured_values():
    reward = MathReward(mode="dapo", correct_score=2.0, incorrect_score=0.0)
    scores, correct, metrics = reward.score_batch([respond("3"), respond("4"), "no answer"], ["3", "3", "3"])
    assert (scores, correct) == ([2.0, 0.0, 0.0], [True, False, False])
    assert metrics["reward/mean"] == pytest.approx(2 / 3)
    assert metrics["reward/no_answer_frac"] == pytest.approx(1 / 3)
    assert {"reward/timeouts", "reward/parse_failures", "reward/accuracy"} <= metrics.keys()
    assert reward(respond("3"), "3") == 2.0


@pytest.mark.parametrize("workers", [0, 1])
def test_math_reward_symbolic(workers):
    reward = MathReward(mode="symbolic", workers=workers, timeout_s=5.0)
    try:
        scores, correct, metrics = reward.score_batch([respond("0.5"), respond("2")], ["1/2", "1/2"])
        assert (scores, correct) == ([1.0, -1.0], [True, False])
        assert metrics["reward/symbolic_rescued"] == 1.0
    finally:
        reward.close()


def test_math_reward_is_a_frozen_picklable_value():
    reward = MathReward(mode="symbolic", workers=1)
    assert reward == MathReward(mode="symbolic", workers=1)
    with pytest.raises(AttributeError):
        reward.mode = "dapo"
    copy = pickle.loads(pickle.dumps(reward))
    assert copy.score_batch([respond("0.5")], ["1/2"])[1] == [True]
    copy.close()


@pytest.mark.parametrize(
    "kwargs,message",
    [({"mode": "exact"}, "unknown mode"), ({"workers": -1}, "workers"), ({"timeout_s": 0}, "timeout_s")],
)
def test_math_reward_refuses_bad_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MathReward(**kwargs)


def length_penalty(response: str, ground_truth: str) -> float:
    """A user's reward function: 1 for an exact answer, minus a length penalty."""
    return (1.0 if response.endswith(ground_truth) else 0.0) - len(response) / 100


@pytest.mark.parametrize("fn", [length_penalty, f"{__name__}:length_penalty", f"{__name__}.length_penalty"])
def test_function_reward_from_a_callable_or_a_path(fn):
    reward = FunctionReward(fn)
    scores, correct, metrics = reward.score_batch(["ab 7", "ab 8"], ["7", "7"])
    assert scores == pytest.approx([0.96, -0.04])
    assert correct == [True, False]
    assert metrics == pytest.approx({"reward/accuracy": 0.5, "reward/mean": 0.46})


@pytest.mark.parametrize("path", ["no_such_pkg.rewards:fn", f"{__name__}:no_such_fn", "math.pi", "nodots"])
def test_function_reward_bad_path_is_one_clear_error(path):
    with pytest.raises(ValueError, match="cannot resolve") as info:
        FunctionReward(path)
    assert repr(path) in str(info.value)


def test_function_reward_rejects_non_callables():
    with pytest.raises(ValueError, match="callable"):
        FunctionReward(42)


CONFIGS = sorted(CONF.glob("*.yaml"))


def test_the_three_reward_configs_exist():
    assert {p.stem for p in CONFIGS} >= {"dapo_math", "symbolic_math", "custom"}


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_every_reward_config_instantiates_with_its_keys(path):
    cfg = OmegaConf.load(path)
    if path.stem == "custom":
        cfg.fn = f"{__name__}:length_penalty"
    reward = instantiate(cfg)
    try:
        assert type(reward).__name__ == cfg._target_.rsplit(".", 1)[1]
        for key, value in cfg.items():
            if key != "_target_":
                assert getattr(reward, key) == value  # YAML keys are the constructor's arguments
        scores, correct, _ = reward.score_batch(["Answer: 3"], ["3"])
        assert correct == [True] and scores[0] > 0
    finally:
        getattr(reward, "close", lambda: None)()


def test_paper_reward_config_is_the_paper_rule():
    cfg = OmegaConf.load(CONF / "dapo_math.yaml")
    assert (cfg.mode, cfg.correct_score, cfg.incorrect_score) == ("dapo", 1.0, -1.0)


def test_custom_config_demands_a_function():
    with pytest.raises(MissingMandatoryValue):
        instantiate(OmegaConf.load(CONF / "custom.yaml"))
