import numpy as np
import pytest

from routing_env import RoutingEnv
from routing_env.core import EXIT, RUN
from routing_env.rewards import (
    BlockDropReward,
    ComputePenalty,
    ConfidenceShaping,
    Correctness,
    NegCrossEntropy,
    Outcome,
    make_reward,
)


def outcome(**kw) -> Outcome:
    base = dict(
        terminated=np.array([True, False]),
        correct=np.array([True, True]),
        cross_entropy=np.array([0.5, 0.5]),
        macs_fraction=np.array([0.5, 0.2]),
        step_macs_fraction=np.array([0.3, 0.2]),
        invalid=np.array([False, False]),
        potential_before=np.array([0.6, 0.6]),
        potential_after=np.array([0.9, 0.9]),
    )
    base.update(kw)
    return Outcome(**base)


def test_default_reward_is_correct_minus_lambda_macs_fraction_at_the_end() -> None:
    reward, terms = make_reward("accuracy", 0.1)(outcome())
    np.testing.assert_allclose(reward, [1.0 - 0.05, 0.0])
    assert set(terms) == {"correct", "compute"}


def test_per_step_charging_charges_what_each_step_spent() -> None:
    reward, terms = (Correctness() + ComputePenalty(0.1, per_step=True))(outcome())
    np.testing.assert_allclose(terms["compute"], [-0.03, -0.02])


def test_cross_entropy_blockdrop_and_custom_values() -> None:
    np.testing.assert_allclose(NegCrossEntropy()(outcome())[0], [-0.5, 0.0])
    wrong = outcome(correct=np.array([False, False]))
    np.testing.assert_allclose(BlockDropReward(gamma=2.0)(wrong)[0], [-2.0, 0.0])
    np.testing.assert_allclose(BlockDropReward()(outcome())[0], [1 - 0.25, 0.0])
    np.testing.assert_allclose(Correctness(correct=2.0, incorrect=-1.0)(wrong)[0], [-1.0, 0.0])


def test_shaping_is_potential_based_and_zero_after_the_end() -> None:
    _, terms = ConfidenceShaping(gamma=1.0)(outcome())
    np.testing.assert_allclose(terms["shaping"], [-0.6, 0.3])


def test_negative_lambda_and_duplicate_terms_are_refused() -> None:
    with pytest.raises(ValueError, match="lam must be >= 0"):
        ComputePenalty(-1.0)
    with pytest.raises(ValueError, match="appears twice"):
        (Correctness() + Correctness())(outcome())
    with pytest.raises(TypeError, match="reward must be a RewardFn"):
        make_reward(3, 0.1)


def episode_return(env: RoutingEnv, index: int, actions: list[int]) -> float:
    env.reset(options={"index": index})
    total = 0.0
    for a in actions:
        _, r, terminated, _, _ = env.step(a)
        total += r
        if terminated:
            return total
    raise AssertionError("episode did not end")


@pytest.mark.parametrize("base", ["accuracy", "cross-entropy"])
def test_terminal_and_per_step_charging_give_the_same_undiscounted_return(base: str) -> None:
    terminal, per_step = RoutingEnv(backbone="tiny-cascade", reward=base, lam=0.3), RoutingEnv(backbone="tiny-cascade", reward=f"{base}-per-step", lam=0.3)
    for index in range(20):
        for actions in ([EXIT], [RUN, EXIT], [RUN, RUN, EXIT]):
            assert episode_return(terminal, index, actions) == pytest.approx(episode_return(per_step, index, actions))


def test_confidence_shaping_shifts_every_return_by_minus_the_first_potential() -> None:
    plain, shaped = RoutingEnv(backbone="tiny-cascade", reward="accuracy"), RoutingEnv(backbone="tiny-cascade", reward="accuracy-shaped")
    for index in range(20):
        obs, _ = shaped.reset(options={"index": index})
        phi0 = float(obs["probs"].max())
        for actions in ([EXIT], [RUN, EXIT], [RUN, RUN, EXIT]):
            assert episode_return(shaped, index, actions) == pytest.approx(episode_return(plain, index, actions) - phi0)


def test_reward_objects_are_accepted_by_the_environment() -> None:
    env = RoutingEnv(backbone="tiny-cascade", reward=NegCrossEntropy() + ComputePenalty(0.2))
    env.reset(seed=0)
    *_, info = env.step(EXIT)
    assert set(info["reward_terms"]) == {"cross_entropy", "compute"}


class ReadsCrossEntropy(NegCrossEntropy):
    """A custom reward (it inherits the conservative default: it uses the cross-entropy)."""


class ClaimsNotToReadIt(NegCrossEntropy):
    uses_cross_entropy = False


def test_cross_entropy_is_computed_only_for_rewards_that_use_it() -> None:
    assert make_reward("accuracy-shaped", 0.1).uses_cross_entropy is False
    assert make_reward("blockdrop", 0.1).uses_cross_entropy is False
    assert make_reward("cross-entropy", 0.1).uses_cross_entropy is True
    assert (ReadsCrossEntropy() + ComputePenalty(0.1)).uses_cross_entropy is True
    custom = RoutingEnv(backbone="tiny-cascade", reward=ReadsCrossEntropy())
    custom.reset(options={"index": 3})
    _, reward, *_ = custom.step(EXIT)
    logits = custom.core.logits[0].astype(np.float64)
    label = int(custom.core.labels[3])
    assert reward == pytest.approx(-(np.log(np.exp(logits - logits.max()).sum()) + logits.max() - logits[label]))
    liar = RoutingEnv(backbone="tiny-cascade", reward=ClaimsNotToReadIt())
    liar.reset(options={"index": 3})
    _, reward, *_ = liar.step(EXIT)
    assert np.isnan(reward)  # loud, not silently 0
