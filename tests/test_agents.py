import numpy as np
import pytest
import torch

from routing_env import RoutingVectorEnv
from routing_env.agents import AGENT_NAMES, agent_class, load_agent, make_agent
from routing_env.agents.baselines import ThresholdAgent
from routing_env.agents.gain import continuation_gain, head_features, tune_tau
from routing_env.core import EXIT, RUN, SKIP
from routing_env.evaluation import route_split, summarize


@pytest.fixture(scope="module")
def val() -> RoutingVectorEnv:
    return RoutingVectorEnv(backbone="tiny-cascade", num_envs=8, split="val", lam=0.05)


@pytest.fixture(scope="module")
def test_env() -> RoutingVectorEnv:
    return RoutingVectorEnv(backbone="tiny-cascade", num_envs=256, split="test", lam=0.05)


@pytest.fixture(scope="module")
def val_heads() -> RoutingVectorEnv:
    return RoutingVectorEnv(backbone="tiny-cascade", num_envs=8, split="val", lam=0.05, obs_mode="heads")


@pytest.fixture(scope="module")
def test_heads() -> RoutingVectorEnv:
    return RoutingVectorEnv(backbone="tiny-cascade", num_envs=256, split="test", lam=0.05, obs_mode="heads")


READS_EVERY_HEAD = ("gain",)
"""Agents that need ``obs_mode="heads"``."""
LEARNED_BY_GRADIENT = ("reinforce", "ppo", "dqn", "a2c", "maskable-ppo")
IGNORE_THE_MASK = ("ppo", "dqn", "a2c")
"""SB3's unmasked algorithms: the environment resolves their invalid actions (``invalid_action="fallback"``)."""


def trained_weights(agent) -> dict[str, torch.Tensor]:
    """The weights a gradient-trained agent's ``learn`` updates (none for the others)."""
    if hasattr(agent, "net"):
        return dict(agent.net.state_dict())
    if hasattr(agent, "model"):
        return dict(agent.model.policy.state_dict())
    return {}


@pytest.mark.parametrize("name", AGENT_NAMES)
def test_every_agent_learns_briefly_acts_validly_and_round_trips(name: str, request, tmp_path) -> None:
    heads = name in READS_EVERY_HEAD
    val, test_env = (request.getfixturevalue(f) for f in (("val_heads", "test_heads") if heads else ("val", "test_env")))
    agent = make_agent(name, val, seed=1)
    before = {k: v.clone() for k, v in trained_weights(agent).items()}
    agent.learn(600)
    if name in LEARNED_BY_GRADIENT:  # 600 steps are enough for updates, not for a good policy
        after = trained_weights(agent)
        assert before and any(not torch.equal(before[k], after[k]) for k in before)
    obs, _ = test_env.reset(seed=0)
    actions = agent.predict(obs, test_env)
    assert actions.shape == (test_env.num_envs,) and actions.dtype.kind == "i"
    assert ((0 <= actions) & (actions < 3)).all()
    if name not in IGNORE_THE_MASK:
        assert obs["action_mask"][np.arange(len(actions)), actions].all()
    agent.save(tmp_path)
    again = load_agent(tmp_path, val)
    assert type(again) is type(agent)
    if name != "random":
        np.testing.assert_array_equal(again.predict(obs, test_env), actions)
    summary = summarize(route_split(agent, test_env), test_env, agent.policy_macs())
    assert summary["n"] == test_env.num_instances
    assert sum(summary["exit_histogram"]) == summary["n"]


def linear_macs(*modules) -> int:
    return sum(m.in_features * m.out_features for module in modules for m in module.modules() if isinstance(m, torch.nn.Linear))


@pytest.mark.parametrize("name", LEARNED_BY_GRADIENT)
def test_learned_policies_count_their_own_macs(name: str, val) -> None:
    """A decision's MACs are its actor's (or Q-network's) matrix products: not the critic's, which
    acting never runs, and not nothing."""
    agent = make_agent(name, val)
    if name == "reinforce":
        acting = [agent.net.actor]
    elif name == "dqn":
        acting = [agent.model.policy.q_net]
    else:
        policy = agent.model.policy
        acting = [policy.pi_features_extractor, policy.mlp_extractor.policy_net, policy.action_net]
    assert agent.policy_macs() == linear_macs(*acting) > 1000


def test_fixed_agent_matches_the_single_exit_accuracy(val, test_env) -> None:
    cache = test_env.core.executor.cache
    for position in range(3):
        records = route_split(make_agent("fixed", val, position=position), test_env)
        expected = cache.logits[position].argmax(axis=1) == test_env.core.labels
        np.testing.assert_array_equal(records.correct, expected)
        assert (records.exit_position == position).all()


def test_oracle_is_an_upper_bound_on_early_exit(val, test_env) -> None:
    oracle = route_split(make_agent("oracle", val), test_env)
    threshold = make_agent("threshold", val)
    threshold.learn(0)
    others = [route_split(make_agent("fixed", val, position=p), test_env) for p in range(3)]
    others.append(route_split(threshold, test_env))
    for r in others:
        assert oracle.correct.mean() >= r.correct.mean()
        assert (oracle.correct >= r.correct).all()  # per instance: right wherever any exit is right
    full = others[2]
    assert oracle.macs.mean() < full.macs.mean()


def test_the_oracle_exits_where_told_on_the_images_no_head_gets_right(val, test_env) -> None:
    first = route_split(make_agent("oracle", val), test_env)
    last = route_split(make_agent("oracle", val, when_wrong="last"), test_env)
    hopeless = ~first.correct
    assert hopeless.any() and (first.exit_position[hopeless] == 0).all() and (last.exit_position[hopeless] == 2).all()
    np.testing.assert_array_equal(first.correct, last.correct)
    np.testing.assert_array_equal(first.exit_position[~hopeless], last.exit_position[~hopeless])
    assert last.macs.mean() > first.macs.mean()
    with pytest.raises(ValueError, match="when_wrong must be 'first' or 'last', got 'middle'"):
        make_agent("oracle", val, when_wrong="middle")


def test_threshold_tuning_respects_a_target_cost(val) -> None:
    agent = ThresholdAgent(val, target_macs_fraction=0.2)
    agent.learn(0)
    val_eval = RoutingVectorEnv(backbone="tiny-cascade", num_envs=256, split="val")
    assert route_split(agent, val_eval).macs_fraction.mean() <= 0.2 + 1e-9
    cheap, dear = ThresholdAgent(val, lam=1.0), ThresholdAgent(val, lam=0.0)
    cheap.learn(0)
    dear.learn(0)
    assert cheap.tau < dear.tau


@pytest.mark.parametrize(
    ("name", "match"),
    [
        ("alphazero", r"unknown agent 'alphazero'; expected one of \['reinforce', 'ppo'"),
        ("no_such_module:Agent", r"cannot import module 'no_such_module'"),
        ("routing_env.agents.baselines:Nope", r"has no attribute 'Nope'"),
        ("routing_env.agents.baselines:", r"malformed custom agent 'routing_env.agents.baselines:'"),
        ("routing_env.agents.baselines:np", r"must be a class \(a subclass of routing_env.agents.Agent\), got a module"),
        ("collections:OrderedDict", r"lacks \['name', 'predict', 'learn'.*subclass routing_env.agents.Agent"),
    ],
)
def test_bad_agent_names(name: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        agent_class(name)


def test_unknown_agent_options_are_refused(val) -> None:
    with pytest.raises(TypeError, match="unknown option"):
        make_agent("reinforce", val, learning_rat=0.1)
    with pytest.raises(TypeError, match="unknown option"):
        make_agent("random", val, depth=3)
    with pytest.raises(TypeError, match="invalid option for agent 'ppo'"):
        make_agent("ppo", val, n_stepz=3)
    with pytest.raises(ValueError, match="position must be an integer in 0..2"):
        make_agent("fixed", val, position=7)


def test_policies_read_the_softmax_sorted_and_not_the_mask(val: RoutingVectorEnv) -> None:
    import torch

    from routing_env.agents.features import RoutingExtractor, input_dim, policy_input_np

    obs, _ = val.reset(seed=0)
    x = policy_input_np(obs)
    d, c = obs["features"].shape[1], obs["probs"].shape[1]
    assert x.shape == (val.num_envs, input_dim(val.single_observation_space))
    np.testing.assert_array_equal(x[:, :d].numpy(), obs["features"])
    np.testing.assert_array_equal(x[:, d : d + c].numpy(), -np.sort(-obs["probs"], axis=1))
    permuted = {**obs, "probs": obs["probs"][:, ::-1].copy(), "action_mask": np.zeros_like(obs["action_mask"])}
    assert torch.equal(policy_input_np(permuted), x)
    extractor = RoutingExtractor(val.single_observation_space)
    assert torch.equal(extractor({k: torch.as_tensor(v) for k, v in obs.items()}), x)


def test_threshold_below_the_cheapest_cost_takes_the_cheapest(val) -> None:
    agent = ThresholdAgent(val, target_macs_fraction=1e-6)
    agent.learn(0)
    assert agent.tau == 0.0
    records = route_split(agent, RoutingVectorEnv(backbone="tiny-cascade", num_envs=256, split="val"))
    assert (records.exit_position == 0).all()


def test_run_logger_names_each_exit_by_its_integer_position(tmp_path) -> None:
    """Ended-episode chunks concatenated with an empty float chunk arrive as floats; the tags stay ``_1``."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from routing_env.agents import RunLogger

    logger = RunLogger(tmp_path)
    exits = np.concatenate([np.array([1, 2, 2]), np.zeros(0)])
    logger.episodes(10, np.ones(3), np.array([1.0, 0.0, 1.0]), np.full(3, 0.5), exits)
    logger.close()
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    tags = [t for t in events.Tags()["scalars"] if t.startswith("charts/accuracy_at_exit_")]
    assert sorted(tags) == ["charts/accuracy_at_exit_1", "charts/accuracy_at_exit_2"]
    assert events.Scalars("charts/accuracy_at_exit_2")[0].value == 0.5


class SkipElseNarrowest:
    """SKIP wherever it is valid, else RUN at the narrowest valid width, EXIT only when nothing else is
    valid: a route whose every stage choice is known from the static tables."""

    def predict(self, obs: dict[str, np.ndarray], env: RoutingVectorEnv) -> np.ndarray:
        mask = obs["action_mask"].astype(bool)
        run = mask[:, RUN:]
        narrowest = RUN + np.argmax(run, axis=1)
        return np.where(mask[:, SKIP], SKIP, np.where(run.any(axis=1), narrowest, EXIT)).astype(np.int64)


def test_stage_choices_count_what_each_episode_did_per_stage() -> None:
    env = RoutingVectorEnv(backbone="tiny-dynamic-resnet", num_envs=64, split="test", allow_skip=True)
    view, n = env.routing, env.num_instances
    summary = summarize(route_split(SkipElseNarrowest(), env), env)
    choices = summary["stage_choices"]
    assert len(choices) == view.num_stages
    skippable = view.static_valid[: view.num_stages, SKIP]
    assert skippable.any() and not skippable.all()
    narrowest = f"{view.widths[0]:g}"
    for k, stage in enumerate(choices):
        assert set(stage["run"]) == {f"{w:g}" for w in view.widths}
        expected = {"skip": n, "not_reached": 0} if skippable[k] else {"skip": 0, "not_reached": 0}
        assert {"skip": stage["skip"], "not_reached": stage["not_reached"]} == expected
        assert stage["run"][narrowest] == (0 if skippable[k] else n)
        assert sum(stage["run"].values()) + stage["skip"] + stage["not_reached"] == n


def test_stage_choices_agree_with_the_exit_histogram_on_a_cascade(test_env) -> None:
    """A cascade runs every member up to its exit (no skips here): stage k is not reached by exactly the
    episodes that exited at a point <= k."""
    agent = ThresholdAgent(test_env, tau=0.8)
    summary = summarize(route_split(agent, test_env), test_env)
    exits = np.array(summary["exit_histogram"])
    assert (exits[:-1] > 0).all()
    for k, stage in enumerate(summary["stage_choices"]):
        assert stage["not_reached"] == exits[: k + 1].sum()
        assert stage["skip"] == 0
        assert stage["run"]["1"] == summary["n"] - exits[: k + 1].sum()


@pytest.mark.parametrize("decide_at", ["block", "head"])
def test_a_fixed_routes_records_hold_its_route_including_the_repeated_moves(decide_at: str) -> None:
    """``decide_at="head"`` repeats a move between heads inside one step: the route records every stage it ran."""
    from routing_env.core import NOT_REACHED
    from routing_env.evaluation import FixedRoute

    env = RoutingVectorEnv(backbone="tiny-dynamic-resnet", num_envs=32, split="test", decide_at=decide_at)
    view = env.routing
    widest = len(view.widths) - 1
    for position in view.head_positions:
        records = route_split(FixedRoute(position), env)
        expected = np.array([widest] * position + [NOT_REACHED] * (view.num_stages - position))
        assert (records.route == expected).all(), (position, records.route[:2])
        assert (records.exit_position == position).all()


def test_gain_features_read_every_head_so_far() -> None:
    probs = np.array([[[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6]]])  # (B=1, 3 heads, C=3)
    x = head_features(probs)
    assert x.shape == (1, 3 * (3 + 2) + 2 * 2)
    np.testing.assert_allclose(x[0, :9], probs.ravel())
    np.testing.assert_allclose(x[0, 9:12], [0.7, 0.8, 0.6])  # each head's largest probability
    np.testing.assert_allclose(x[0, 12:15], [-(p * np.log(p)).sum() for p in probs[0]])  # entropies
    np.testing.assert_array_equal(x[0, 15:17], [0.0, 0.0])  # heads 0 and 1 chose classes 0 and 1, the latest class 2
    np.testing.assert_allclose(x[0, 17:19], [0.2, 0.2])  # the latest head's probability of those classes
    agreeing = head_features(np.array([[[0.1, 0.9], [0.3, 0.7]]]))
    assert agreeing[0, 2 * 4] == 1.0  # one earlier head, agreeing with the latest


def test_continuation_gain_is_what_going_on_can_add() -> None:
    correct = np.array([[1, 0, 0, 1], [0, 0, 1, 1], [0, 1, 0, 1]], dtype=bool)  # (3 heads, 4 images)
    np.testing.assert_array_equal(continuation_gain(correct), [[-1, 1, 1, 0], [0, 1, -1, 0]])


def test_gain_agent_needs_every_head_and_tunes_to_a_target_cost(val, val_heads, test_heads) -> None:
    with pytest.raises(ValueError, match="obs_mode='heads'"):
        make_agent("gain", val)
    with pytest.raises(ValueError, match="folds must be an integer >= 2, got 1"):
        make_agent("gain", val_heads, folds=1)
    unfitted = route_split(make_agent("gain", val_heads), test_heads)
    assert (unfitted.exit_position == 2).all()  # nothing fitted: the full path
    for target in (0.3, 0.6):
        agent = make_agent("gain", val_heads, target_macs_fraction=target)
        agent.learn(0)
        assert agent.alpha in agent.alphas and len(agent.models) == 2
        on_val = route_split(agent, val_heads)
        assert on_val.macs_fraction.mean() <= target
        assert len(set(on_val.exit_position.tolist())) > 1  # it routes per image
    cheapest = make_agent("gain", val_heads, target_macs_fraction=0.0)
    cheapest.learn(0)
    assert (route_split(cheapest, test_heads).exit_position == 0).all()  # nothing fits: the first head


def test_gain_agent_refuses_a_file_fitted_for_another_number_of_heads(val_heads, tmp_path) -> None:  # noqa: ANN001
    from routing_env.checkpoints import load_state_dict, save_state_dict

    agent = make_agent("gain", val_heads, target_macs_fraction=0.5)
    agent.learn(0)
    agent.save(tmp_path)
    state = load_state_dict(tmp_path / "gain.pt")
    save_state_dict({**state, **{f"head2.{k}": v for k, v in state.items() if k.startswith("head0.")}}, tmp_path / "gain.pt")
    with pytest.raises(ValueError, match="holds 3 regressions; this environment's 3 heads need 2"):
        make_agent("gain", val_heads).load_state(tmp_path)  # one more head's regression than this cascade has


def test_exit_outcomes_stop_at_the_first_small_gain() -> None:
    from routing_env.evaluation import ExitTable

    table = ExitTable(positions=np.arange(3), correct=np.array([[1, 0], [0, 1], [1, 1]], dtype=bool),
                      macs_fraction=np.array([[0.1, 0.1], [0.4, 0.4], [1.0, 1.0]]), confidence=np.zeros((3, 2)),
                      probs=np.zeros((3, 2, 2)))
    correct, cost = table.first_stop(np.array([[-0.5, 0.9], [0.2, -0.1]]) <= 0.0)
    np.testing.assert_array_equal(correct, [True, True])
    np.testing.assert_allclose(cost, [0.1, 0.4])
    with pytest.raises(ValueError, match="3 or 2 rows"):  # one row would make the second head the last
        table.first_stop(np.array([[True, False]]))
    gain = np.array([[-0.5, 0.9], [0.2, -0.1]])
    assert tune_tau(gain, table, target=0.2, lam=0.0)[1] == 0.5  # within 0.2 both exit at the first head: one right
    tau, score = tune_tau(gain, table, target=0.3, lam=0.0)  # the second image may go on to head 1 (mean cost 0.25)
    assert score == 1.0 and -0.1 <= tau < 0.9
    # every tau in [-0.1, 0.9) routes the same way, the cheapest with both right: beyond it the second
    # image stops at head 0, wrong, and below -0.1 it runs on to head 2 (mean cost 0.55, over the target)
    correct, cost = table.first_stop(gain <= tau)
    assert correct.all() and cost.mean() == pytest.approx(0.25)


def test_gain_agents_round_trip_fitted_or_not(val_heads, test_heads, tmp_path) -> None:
    make_agent("gain", val_heads).save(tmp_path / "unfitted")
    again = load_agent(tmp_path / "unfitted", val_heads)
    assert again.models == [] and again.alpha is None and (route_split(again, test_heads).exit_position == 2).all()
    fitted = make_agent("gain", val_heads, target_macs_fraction=0.5, alphas=[0.3, 3.0])
    fitted.learn(0)
    fitted.save(tmp_path / "fitted")
    again = load_agent(tmp_path / "fitted", val_heads)
    assert again.alpha == fitted.alpha and again.alpha in again.alphas and again.tau == fitted.tau
    np.testing.assert_array_equal(route_split(again, test_heads).exit_position, route_split(fitted, test_heads).exit_position)


@pytest.mark.parametrize("name", ["ppo", "dqn"])
def test_sb3_agents_leave_no_logger_folders_behind(name: str, val, tmp_path, monkeypatch) -> None:
    # SB3 configures a logger in a fresh /tmp/SB3-<date> folder at each learn() unless given one
    monkeypatch.delenv("SB3_LOGDIR", raising=False)
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    agent = make_agent(name, val, seed=0)
    agent.learn(64)
    agent.learn(64)
    assert list(tmp_path.iterdir()) == []
