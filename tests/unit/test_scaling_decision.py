"""The scaling decision as a pure function, with an injected clock."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from taskhub_operator.scaling import Decision, Policy, Recommendation, decide, recommend, remember

T0 = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
POLICY = Policy(
    min_replicas=1,
    max_replicas=10,
    target_per_replica=20,
    window=timedelta(seconds=300),
    cooldown=timedelta(seconds=60),
)


def step(
    messages: int,
    current: int,
    *,
    at: float,
    history: list[Recommendation] | None = None,
    last_scale: float | None = None,
    policy: Policy = POLICY,
) -> Decision:
    return decide(
        messages=messages,
        current=current,
        policy=policy,
        history=history or [],
        last_scale=None if last_scale is None else T0 + timedelta(seconds=last_scale),
        now=T0 + timedelta(seconds=at),
    )


class TestRecommend:
    def test_ceil_of_messages_per_target_clamped(self) -> None:
        assert recommend(95, POLICY) == 5
        assert recommend(100, POLICY) == 5
        assert recommend(101, POLICY) == 6
        assert recommend(10_000, POLICY) == 10
        assert recommend(1, POLICY) == 1

    def test_at_or_below_activation_is_min(self) -> None:
        policy = Policy(min_replicas=0, max_replicas=5, target_per_replica=10, activation=5)
        assert recommend(5, policy) == 0
        assert recommend(6, policy) == 1
        assert recommend(0, Policy(min_replicas=2, max_replicas=5, target_per_replica=10)) == 2


class TestDecide:
    def test_scales_up_at_once(self) -> None:
        decision = step(500, 2, at=0, last_scale=-1)  # cooldown does not hold an increase
        assert (decision.desired, decision.reason) == (10, "ScaleUp")

    def test_scale_down_waits_for_the_window(self) -> None:
        first = step(200, 10, at=0)
        assert first.desired == 10
        quiet = step(0, 10, at=60, history=first.history, last_scale=-600)
        assert (quiet.desired, quiet.reason) == (10, "Stabilizing")
        later = step(0, 10, at=301, history=quiet.history, last_scale=-600)
        assert (later.desired, later.reason) == (8, "ScaleDown")  # 25 % of 10, floored

    def test_scale_down_goes_to_the_window_high_not_below(self) -> None:
        history = step(120, 10, at=0).history  # recommends 6
        decision = step(0, 10, at=100, history=history, last_scale=-600)
        assert (decision.desired, decision.reason) == (8, "ScaleDown")  # limited by the step
        decision = step(0, 7, at=100, history=history, last_scale=-600)
        assert decision.desired == 6  # the window's high (6) beats the step (5)

    def test_at_least_one_per_step(self) -> None:
        decision = step(0, 3, at=0, last_scale=-600)
        assert decision.desired == 2  # floor(3 * 0.25) = 0, at least 1

    def test_cooldown_holds_a_decrease(self) -> None:
        decision = step(0, 5, at=30, last_scale=0)
        assert (decision.desired, decision.reason) == (5, "CoolingDown")
        assert step(0, 5, at=61, last_scale=0).desired == 4

    def test_changes_within_tolerance_are_ignored(self) -> None:
        wide = Policy(min_replicas=1, max_replicas=20, target_per_replica=20)
        assert step(210, 10, at=0, policy=wide).reason == "WithinTolerance"  # 11 vs 10
        assert step(240, 10, at=0, policy=wide).desired == 12
        assert step(180, 10, at=0, policy=wide, last_scale=-600).reason == "WithinTolerance"

    def test_out_of_bounds_is_clamped_at_once(self) -> None:
        assert step(0, 15, at=0, last_scale=0).desired == 10
        assert step(0, 0, at=0, last_scale=0).desired == 1

    def test_flapping_load_does_not_flap_the_count(self) -> None:
        """A load that swings every 30 s between 0 and 200 messages keeps 10 replicas."""
        current, history, last, changes = 10, [], -600.0, 0
        for tick in range(40):
            messages = 200 if tick % 2 == 0 else 0
            decision = step(messages, current, at=tick * 30, history=history, last_scale=last)
            history = decision.history
            if decision.desired != current:
                changes += 1
                current, last = decision.desired, tick * 30
        assert (current, changes) == (10, 0)


class TestWindow:
    def test_keeps_only_what_can_still_be_the_high(self) -> None:
        window = timedelta(seconds=10)
        history: list[Recommendation] = []
        for second, replicas in enumerate([3, 5, 4, 2, 4]):
            history = remember(
                history, Recommendation(T0 + timedelta(seconds=second), replicas), window
            )
        assert [r.replicas for r in history] == [5, 4]

    @settings(max_examples=300, deadline=None)
    @given(st.lists(st.tuples(st.integers(1, 20), st.integers(0, 50)), min_size=1, max_size=60))
    def test_the_first_entry_is_the_window_maximum(self, samples: list[tuple[int, int]]) -> None:
        window = timedelta(seconds=30)
        history: list[Recommendation] = []
        now, seen = T0, []
        for gap, replicas in samples:
            now += timedelta(seconds=gap)
            seen.append(Recommendation(now, replicas))
            history = remember(history, seen[-1], window)
            expected = max(r.replicas for r in seen if now - r.time < window)
            assert history[0].replicas == expected
            assert [r.replicas for r in history] == sorted(
                (r.replicas for r in history), reverse=True
            )


policies = st.builds(
    lambda low, span, target, activation, cooldown: Policy(
        min_replicas=low,
        max_replicas=low + span,
        target_per_replica=target,
        activation=activation,
        window=timedelta(seconds=120),
        cooldown=timedelta(seconds=cooldown),
    ),
    st.integers(0, 5),
    st.integers(1, 30),
    st.integers(1, 50),
    st.integers(0, 20),
    st.integers(0, 90),
)


class TestProperties:
    @settings(max_examples=500, deadline=None)
    @given(
        policy=policies,
        load=st.lists(st.integers(0, 2000), min_size=1, max_size=40),
        start=st.integers(0, 40),
        gap=st.integers(1, 60),
    )
    def test_invariants_over_a_run(
        self, policy: Policy, load: list[int], start: int, gap: int
    ) -> None:
        current, history, last = start, [], None
        for tick, messages in enumerate(load):
            now = T0 + timedelta(seconds=tick * gap)
            decision = decide(
                messages=messages,
                current=current,
                policy=policy,
                history=history,
                last_scale=last,
                now=now,
            )
            desired = decision.desired
            inside = policy.min_replicas <= current <= policy.max_replicas
            # Always within bounds once a decision is taken.
            assert policy.min_replicas <= desired <= policy.max_replicas
            if inside and desired < current:
                # Down: only after the cooldown, by at most 25 % (at least 1), never
                # below the window's highest recommendation (this one included).
                assert last is None or now - last >= policy.cooldown
                assert current - desired <= max(1, math.floor(current * 0.25))
                assert desired >= decision.history[0].replicas
                assert desired >= decision.recommended
            if inside and desired > current:
                assert desired == decision.recommended  # up: straight to the recommendation
            if inside and desired != current and current > 0:
                assert abs(decision.recommended - current) > policy.tolerance * current
            history = decision.history
            if desired != current:
                current, last = desired, now
