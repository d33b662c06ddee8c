"""engine/rules.py: trigger rules, retry-or-fail, backoff delays, mapped summaries, branch
choices. Pure functions fed with values."""

from __future__ import annotations

import random
from itertools import product

import pytest

from cadenza.core.records import ErrorInfo, ErrorKind
from cadenza.core.states import TaskState
from cadenza.engine.rules import (
    FREE_LOST_WORKER_RETRIES,
    Decision,
    UpstreamCounts,
    branch_choice,
    evaluate,
    lost_worker_is_free,
    retry_delay_s,
    should_retry,
    summarize_mapped,
)
from cadenza.executors.base import describe_exception
from cadenza.graph.model import TaskOptions, TriggerRule

S = TaskState
R = TriggerRule
D = Decision

OK, FAIL, SKIP, UPF, CACHED, CANC = S.SUCCESS, S.FAILED, S.SKIPPED, S.UPSTREAM_FAILED, S.CACHED, S.CANCELLED


def counts(*finished: TaskState, pending: int = 0) -> UpstreamCounts:
    """Upstream counts after `finished` upstreams ended, with `pending` still running."""
    c = UpstreamCounts(total=len(finished) + pending, remaining=len(finished) + pending)
    for state in finished:
        c.add(state)
    return c


# -- UpstreamCounts ---------------------------------------------------------------------------
def test_upstream_counts_classify_final_states() -> None:
    c = counts(OK, CACHED, FAIL, CANC, UPF, SKIP, pending=2)
    assert (c.total, c.remaining) == (8, 2)
    assert c.ok == 2  # success and cached
    assert c.failed == 2  # failed and cancelled
    assert c.upstream_failed == 1
    assert c.skipped == 1


# -- trigger rules: every rule on every finished combination ----------------------------------
def expected(rule: TriggerRule, states: tuple[TaskState, ...]) -> Decision:
    """The rules as Airflow users know them, once every upstream has finished."""
    ok = sum(s in (OK, CACHED) for s in states)
    failed = sum(s in (FAIL, CANC, UPF) for s in states)
    skipped = sum(s is SKIP for s in states)
    n = len(states)
    if rule is R.ALL_SUCCESS:
        return D.UPSTREAM_FAILED if failed else (D.SKIP if skipped else D.RUN)
    if rule is R.ALL_FAILED:
        return D.RUN if failed == n else D.SKIP
    if rule in (R.ALL_DONE, R.ALWAYS):
        return D.RUN
    if rule is R.ONE_SUCCESS:
        if ok:
            return D.RUN
        return D.SKIP if skipped == n else D.UPSTREAM_FAILED
    if rule is R.ONE_FAILED:
        return D.RUN if failed else D.SKIP
    if rule is R.NONE_FAILED:
        return D.UPSTREAM_FAILED if failed else D.RUN
    if rule is R.NONE_FAILED_MIN_ONE_SUCCESS:
        if failed:
            return D.UPSTREAM_FAILED
        return D.RUN if ok else D.SKIP
    if rule is R.NONE_SKIPPED:
        return D.SKIP if skipped else D.RUN
    raise AssertionError(rule)


FINAL_MIX = [OK, FAIL, SKIP, UPF]
COMBOS = [combo for n in (1, 2, 3) for combo in product(FINAL_MIX, repeat=n)]


def test_there_are_nine_trigger_rules() -> None:
    assert {r.value for r in TriggerRule} == {
        "all_success", "all_failed", "all_done", "one_success", "one_failed", "none_failed",
        "none_failed_min_one_success", "none_skipped", "always",
    }


@pytest.mark.parametrize("rule", list(TriggerRule))
def test_every_rule_on_every_combination_of_finished_upstreams(rule: TriggerRule) -> None:
    for combo in COMBOS:
        assert evaluate(rule, counts(*combo)) is expected(rule, combo), (rule, combo)


@pytest.mark.parametrize("rule", list(TriggerRule))
def test_no_upstreams_means_run(rule: TriggerRule) -> None:
    assert evaluate(rule, UpstreamCounts(total=0, remaining=0)) is D.RUN


# `always` is left out: whether it may start before its upstreams finish (Airflow) or waits
# for them like all_done is not fixed by the SPEC.
@pytest.mark.parametrize("rule", [r for r in TriggerRule if r is not R.ALWAYS])
def test_nothing_finished_yet_means_wait(rule: TriggerRule) -> None:
    assert evaluate(rule, counts(pending=2)) is D.WAIT


@pytest.mark.parametrize("rule", list(TriggerRule))
def test_cached_counts_as_success_and_cancelled_as_failed(rule: TriggerRule) -> None:
    assert evaluate(rule, counts(CACHED, OK)) is evaluate(rule, counts(OK, OK))
    assert evaluate(rule, counts(CANC, OK)) is evaluate(rule, counts(FAIL, OK))


@pytest.mark.parametrize(
    ("rule", "finished", "decision"),
    [
        # early decisions: the answer is known before every upstream has finished
        (R.ALL_SUCCESS, (FAIL,), D.UPSTREAM_FAILED),
        (R.ALL_SUCCESS, (UPF,), D.UPSTREAM_FAILED),
        (R.ALL_FAILED, (OK,), D.SKIP),
        (R.ALL_FAILED, (SKIP,), D.SKIP),
        (R.ONE_SUCCESS, (OK,), D.RUN),
        (R.ONE_SUCCESS, (CACHED,), D.RUN),
        (R.ONE_FAILED, (FAIL,), D.RUN),
        (R.ONE_FAILED, (UPF,), D.RUN),
        (R.NONE_FAILED, (FAIL,), D.UPSTREAM_FAILED),
        (R.NONE_FAILED_MIN_ONE_SUCCESS, (UPF,), D.UPSTREAM_FAILED),
        (R.NONE_SKIPPED, (SKIP,), D.SKIP),
        # not decidable yet: wait for the rest
        (R.ALL_SUCCESS, (OK,), D.WAIT),
        (R.ALL_FAILED, (FAIL,), D.WAIT),
        (R.ALL_DONE, (FAIL, OK), D.WAIT),
        (R.ONE_SUCCESS, (FAIL, SKIP), D.WAIT),
        (R.ONE_FAILED, (OK, SKIP), D.WAIT),
        (R.NONE_FAILED, (OK, SKIP), D.WAIT),
        (R.NONE_FAILED_MIN_ONE_SUCCESS, (SKIP,), D.WAIT),
        (R.NONE_SKIPPED, (OK, FAIL), D.WAIT),
    ],
)
def test_decisions_before_every_upstream_has_finished(
    rule: TriggerRule, finished: tuple[TaskState, ...], decision: Decision
) -> None:
    assert evaluate(rule, counts(*finished, pending=1)) is decision


def test_all_success_default_runs_only_when_every_upstream_succeeded() -> None:
    assert evaluate(R.ALL_SUCCESS, counts(OK, CACHED, OK)) is D.RUN
    assert evaluate(R.ALL_SUCCESS, counts(OK, SKIP)) is D.SKIP
    assert evaluate(R.ALL_SUCCESS, counts(OK, FAIL)) is D.UPSTREAM_FAILED
    assert evaluate(R.ALL_SUCCESS, counts(SKIP, FAIL)) is D.UPSTREAM_FAILED


def test_one_success_all_skipped_skips_but_failures_fail() -> None:
    assert evaluate(R.ONE_SUCCESS, counts(SKIP, SKIP)) is D.SKIP
    assert evaluate(R.ONE_SUCCESS, counts(SKIP, FAIL)) is D.UPSTREAM_FAILED
    assert evaluate(R.ONE_SUCCESS, counts(FAIL, FAIL)) is D.UPSTREAM_FAILED


def test_none_failed_min_one_success_all_skipped_skips() -> None:
    assert evaluate(R.NONE_FAILED_MIN_ONE_SUCCESS, counts(SKIP, SKIP)) is D.SKIP
    assert evaluate(R.NONE_FAILED_MIN_ONE_SUCCESS, counts(SKIP, OK)) is D.RUN
    assert evaluate(R.NONE_FAILED, counts(SKIP, SKIP)) is D.RUN


def test_all_done_and_always_run_after_any_outcome() -> None:
    for rule in (R.ALL_DONE, R.ALWAYS):
        assert evaluate(rule, counts(FAIL, UPF, SKIP, CANC)) is D.RUN
        assert evaluate(rule, counts(OK)) is D.RUN


def test_none_skipped_runs_after_failures() -> None:
    assert evaluate(R.NONE_SKIPPED, counts(FAIL, UPF, OK)) is D.RUN


def test_all_failed_runs_when_every_upstream_failed_or_upstream_failed() -> None:
    assert evaluate(R.ALL_FAILED, counts(FAIL, UPF, CANC)) is D.RUN


# -- should_retry -----------------------------------------------------------------------------
class TransientError(ConnectionError):
    pass


class VeryTransientError(TransientError):
    pass


def exc_error(exc: BaseException) -> ErrorInfo:
    return describe_exception(exc)


def kind_error(kind: ErrorKind) -> ErrorInfo:
    return ErrorInfo(kind=kind, type="cadenza.X", message="x")


def test_retries_until_exhausted() -> None:
    opts = TaskOptions(retries=2)
    err = exc_error(RuntimeError("boom"))
    assert should_retry(opts, 1, err) is True
    assert should_retry(opts, 2, err) is True
    assert should_retry(opts, 3, err) is False
    assert should_retry(opts, 4, err) is False


def test_no_retries_means_never_retry() -> None:
    assert should_retry(TaskOptions(), 1, exc_error(RuntimeError("boom"))) is False


def test_retry_on_matches_the_exception_class() -> None:
    opts = TaskOptions(retries=3, retry_on=(ConnectionError,))
    assert should_retry(opts, 1, exc_error(ConnectionError("down"))) is True
    assert should_retry(opts, 1, exc_error(ValueError("bad"))) is False


def test_retry_on_matches_subclasses_through_the_mro() -> None:
    opts = TaskOptions(retries=3, retry_on=(ConnectionError,))
    assert should_retry(opts, 1, exc_error(VeryTransientError("flaky"))) is True
    assert should_retry(opts, 1, exc_error(ConnectionRefusedError())) is True
    only_user_class = TaskOptions(retries=3, retry_on=(TransientError,))
    assert should_retry(only_user_class, 1, exc_error(VeryTransientError())) is True
    assert should_retry(only_user_class, 1, exc_error(ConnectionError())) is False  # a parent


def test_retry_on_matches_by_name_without_the_class() -> None:
    """A worker in another process sends class names, not classes."""
    opts = TaskOptions(retries=1, retry_on=(TransientError,))
    name = f"{TransientError.__module__}.{TransientError.__qualname__}"
    err = ErrorInfo(kind=ErrorKind.EXCEPTION, type="other.Sub", message="", type_mro=("other.Sub", name))
    assert should_retry(opts, 1, err) is True
    no_mro = ErrorInfo(kind=ErrorKind.EXCEPTION, type=name, message="")
    assert should_retry(opts, 1, no_mro) is False


def test_retry_on_with_several_classes() -> None:
    opts = TaskOptions(retries=1, retry_on=(KeyError, TimeoutError))
    assert should_retry(opts, 1, exc_error(TimeoutError()))
    assert should_retry(opts, 1, exc_error(KeyError("k")))
    assert not should_retry(opts, 1, exc_error(IndexError()))


@pytest.mark.parametrize("kind", [ErrorKind.TIMEOUT, ErrorKind.WORKER_LOST])
def test_timeouts_and_lost_workers_are_retried_regardless_of_retry_on(kind: ErrorKind) -> None:
    opts = TaskOptions(retries=1, retry_on=(KeyError,))
    assert should_retry(opts, 1, kind_error(kind)) is True
    assert should_retry(opts, 2, kind_error(kind)) is False  # but not past the retries


@pytest.mark.parametrize("kind", [ErrorKind.SERIALIZATION, ErrorKind.INPUT, ErrorKind.CANCELLED,
                                  ErrorKind.RESOURCES, ErrorKind.BRANCH])
def test_failures_that_retrying_cannot_fix_are_never_retried(kind: ErrorKind) -> None:
    assert should_retry(TaskOptions(retries=5), 1, kind_error(kind)) is False
    assert should_retry(TaskOptions(retries=5, retry_on=(Exception,)), 1, kind_error(kind)) is False


# -- retry_delay_s ----------------------------------------------------------------------------
def test_delay_without_backoff_is_constant() -> None:
    opts = TaskOptions(retries=5, retry_delay_s=3.0)
    assert [retry_delay_s(opts, a) for a in (1, 2, 3)] == [3.0, 3.0, 3.0]


def test_backoff_multiplies_the_delay_per_attempt() -> None:
    opts = TaskOptions(retries=5, retry_delay_s=2.0, retry_backoff=2.0)
    assert [retry_delay_s(opts, a) for a in (1, 2, 3, 4, 5)] == [2.0, 4.0, 8.0, 16.0, 32.0]


def test_backoff_is_capped_at_max_retry_delay() -> None:
    opts = TaskOptions(retries=10, retry_delay_s=2.0, retry_backoff=3.0, max_retry_delay_s=60.0)
    assert [retry_delay_s(opts, a) for a in (1, 2, 3, 4, 5, 9)] == [2.0, 6.0, 18.0, 54.0, 60.0, 60.0]


def test_zero_delay_stays_zero_even_with_jitter() -> None:
    opts = TaskOptions(retries=3, retry_jitter=0.5)
    assert retry_delay_s(opts, 2, rng=random.Random(1)) == 0.0


def test_jitter_adds_up_to_the_fraction_of_the_delay() -> None:
    opts = TaskOptions(retries=3, retry_delay_s=10.0, retry_backoff=2.0, retry_jitter=0.5)
    rng = random.Random(42)
    delays = [retry_delay_s(opts, 2, rng=rng) for _ in range(200)]
    assert all(20.0 <= d <= 30.0 for d in delays)
    assert len(set(delays)) > 100  # actually random
    assert min(delays) < 22.0 and max(delays) > 28.0  # spread over the range


def test_jitter_is_reproducible_with_a_seeded_rng() -> None:
    opts = TaskOptions(retries=3, retry_delay_s=10.0, retry_jitter=0.2)
    r = random.Random(7).random()
    assert retry_delay_s(opts, 1, rng=random.Random(7)) == pytest.approx(10.0 + 10.0 * 0.2 * r)
    assert retry_delay_s(opts, 1, rng=random.Random(7)) == retry_delay_s(opts, 1, rng=random.Random(7))


def test_jitter_applies_after_the_cap() -> None:
    opts = TaskOptions(retries=9, retry_delay_s=10.0, retry_backoff=10.0, max_retry_delay_s=50.0,
                       retry_jitter=0.1)
    rng = random.Random(3)
    for _ in range(50):
        assert 50.0 <= retry_delay_s(opts, 5, rng=rng) <= 55.0


# -- summarize_mapped -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("states", "summary"),
    [
        ([], S.SUCCESS),
        ([OK, OK], S.SUCCESS),
        ([OK, CACHED], S.SUCCESS),
        ([OK, SKIP], S.SUCCESS),
        ([SKIP, SKIP], S.SKIPPED),
        ([OK, FAIL, SKIP], S.FAILED),
        ([OK, CANC], S.FAILED),
        ([OK, UPF], S.UPSTREAM_FAILED),
        ([UPF, FAIL], S.FAILED),
        ([UPF, SKIP], S.UPSTREAM_FAILED),
    ],
)
def test_summary_state_of_a_mapped_task(states: list[TaskState], summary: TaskState) -> None:
    assert summarize_mapped(states) is summary


# -- branch_choice ----------------------------------------------------------------------------
DIRECT = ["deploy", "alert", "notify"]


def test_branch_returning_one_id() -> None:
    assert branch_choice("deploy", DIRECT) == (["deploy"], "")


def test_branch_returning_a_list_or_tuple_of_ids() -> None:
    assert branch_choice(["deploy", "notify"], DIRECT) == (["deploy", "notify"], "")
    assert branch_choice(("alert",), DIRECT) == (["alert"], "")


def test_branch_returning_none_or_empty_chooses_nothing() -> None:
    assert branch_choice(None, DIRECT) == ([], "")
    assert branch_choice([], DIRECT) == ([], "")


def test_branch_returning_an_unknown_id_is_an_error_naming_the_choices() -> None:
    chosen, message = branch_choice("deplyo", DIRECT)
    assert chosen is None
    assert "branch returned 'deplyo'" in message
    assert "(deploy, alert, notify)" in message


def test_branch_returning_a_list_with_an_unknown_id_is_an_error() -> None:
    chosen, message = branch_choice(["deploy", "nope"], DIRECT)
    assert chosen is None
    assert "'nope'" in message


@pytest.mark.parametrize("value", [1, {"deploy": True}, ["deploy", 2], 3.5])
def test_branch_returning_a_non_string_is_an_error(value: object) -> None:
    chosen, message = branch_choice(value, DIRECT)
    assert chosen is None
    assert "must return a task id or a list of task ids" in message
    assert type(value).__name__ in message


def test_only_the_first_lost_worker_is_free() -> None:
    lost = kind_error(ErrorKind.WORKER_LOST)
    assert lost_worker_is_free(lost, 0) is True
    assert lost_worker_is_free(lost, FREE_LOST_WORKER_RETRIES) is False
    assert lost_worker_is_free(kind_error(ErrorKind.TIMEOUT), 0) is False
    assert lost_worker_is_free(kind_error(ErrorKind.EXCEPTION), 0) is False
