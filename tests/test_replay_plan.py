"""The replay's pure decisions (bus.replay.plan): pages, checkpoints, states, pacing."""
from __future__ import annotations

from bus.replay import plan
from bus.store.replays import Checkpoint, Replay


def replay(**kw) -> Replay:
    return Replay(**{"name": "r", "archive": "a", "bus": "default", "event_start_ms": 1000, "event_end_ms": 9000, **kw})


def test_a_new_replay_reads_from_its_start_time():
    assert plan.next_page(replay(), 100) == plan.Page(1000, 9000, 0, 100)


def test_a_replay_with_a_checkpoint_reads_past_the_members_done_at_its_score():
    assert plan.next_page(replay(checkpoint=Checkpoint(5000, 3)), 10) == plan.Page(5000, 9000, 3, 10)


def test_the_checkpoint_counts_the_members_at_the_last_score_of_a_step():
    assert plan.advance(None, [1000, 2000, 2000]) == Checkpoint(2000, 2)


def test_a_step_that_stays_at_the_checkpoints_score_adds_to_its_count():
    assert plan.advance(Checkpoint(2000, 2), [2000, 2000]) == Checkpoint(2000, 4)


def test_a_step_that_moves_past_the_checkpoints_score_starts_counting_again():
    assert plan.advance(Checkpoint(2000, 2), [2000, 3000]) == Checkpoint(3000, 1)


def test_an_empty_step_leaves_the_checkpoint():
    assert plan.advance(Checkpoint(2000, 2), []) == Checkpoint(2000, 2)


def test_a_short_page_fully_sent_completes_the_replay():
    done = plan.after_step(replay(state="RUNNING"), [1500, 1600], page_len=2, asked=5, now=42.0)
    assert (done.state, done.replay_end, done.event_last_replayed_ms, done.replayed) == ("COMPLETED", 42.0, 1600, 2)


def test_a_full_page_keeps_the_replay_running_with_its_last_event_time():
    going = plan.after_step(replay(), [1500, 1600], page_len=2, asked=2, now=42.0)
    assert (going.state, going.replay_end, going.event_last_replayed_ms) == ("RUNNING", None, 1600)


def test_a_page_cut_short_by_the_byte_cap_is_not_the_last():
    going = plan.after_step(replay(), [1500], page_len=2, asked=5, now=42.0)
    assert going.state == "RUNNING"


def test_an_empty_window_completes_at_once():
    assert plan.after_step(replay(), [], page_len=0, asked=100, now=1.0).state == "COMPLETED"


def test_cancelling_becomes_cancelled_even_if_the_archive_is_gone():
    assert plan.decide(replay(state="CANCELLING"), "Archive a does not exist.") == plan.Decision("CANCELLED", "Replay cancelled.")


def test_a_gone_archive_fails_a_running_replay_with_the_reason():
    assert plan.decide(replay(state="RUNNING"), "Archive a does not exist.") == plan.Decision("FAILED", "Archive a does not exist.")


def test_an_active_replay_sends_and_a_finished_one_does_nothing():
    assert plan.decide(replay(), None).send
    assert plan.decide(replay(state="COMPLETED"), None) is None


def test_the_byte_cap_takes_at_least_one_event_and_stops_before_the_one_that_overflows():
    assert plan.take([10, 10, 10], max_bytes=25) == 2
    assert plan.take([100, 10], max_bytes=25) == 1
    assert plan.take([10, 10], max_bytes=25) == 2
    assert plan.take([], max_bytes=25) == 0


def test_pages_are_a_tenth_of_a_second_at_the_rate_within_bounds():
    assert plan.page_size(1000) == 100
    assert plan.page_size(100_000) == plan.MAX_PAGE
    assert plan.page_size(5) == 1
    assert plan.page_size(50) == 5


def test_the_next_step_waits_for_the_events_sent_at_the_rate():
    assert plan.next_step_at(10.0, 50, 100.0) == 10.5


def test_lag_is_end_time_minus_the_last_replayed_event_time():
    assert plan.lag_seconds(replay(event_last_replayed_ms=4000)) == 5.0
    assert plan.lag_seconds(replay()) == 8.0


def test_ended_sets_the_state_reason_and_end_time():
    out = plan.ended(replay(state="RUNNING"), "FAILED", "gone", 7.0)
    assert (out.state, out.state_reason, out.replay_end) == ("FAILED", "gone", 7.0)
