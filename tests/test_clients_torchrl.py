"""torchrl drives the environments with no adapter code (issue 19): ``GymEnv`` by id, and ``GymWrapper``
over our native vector env under the autoreset modes torchrl accepts.

Runs in its own venv with torchrl installed (``make test-clients``); skipped elsewhere."""

from __future__ import annotations

import gymnasium as gym
import pytest

pytestmark = pytest.mark.clients

torchrl = pytest.importorskip("torchrl")
torch = pytest.importorskip("torch")

from torchrl.envs import ActionMask, GymEnv, GymWrapper, TransformedEnv  # noqa: E402
from torchrl.envs.utils import check_env_specs  # noqa: E402

from helpers import readme_block  # noqa: E402

ID = "routing_env:routing_env/Cascade-v0"
OBS_KEYS = {"features", "probs", "position", "cost", "action_mask"}


def invalid_actions(td) -> int:  # noqa: ANN001
    """How many one-hot actions of a rollout fall outside the action mask they were taken under."""
    taken = td["action"].argmax(-1, keepdim=True)
    return int((~td["action_mask"].bool().gather(-1, taken)).sum())


def test_gym_env_by_id_passes_the_spec_check_and_rolls_out_masked() -> None:
    # GymEnv passes frameskip; our TypeError has Python's wording, so torchrl retries without it.
    base = GymEnv(ID, backbone="tiny-cascade")
    check_env_specs(base)
    assert OBS_KEYS <= set(base.observation_spec.keys())
    env = TransformedEnv(base, ActionMask())
    check_env_specs(env)
    env.set_seed(0)
    td = env.rollout(60, break_when_any_done=False)
    assert td.batch_size == torch.Size([60])
    assert td["action"].shape == (60, 3) and td["action_mask"].shape == (60, 3)
    assert td["next", "features"].shape == (60, 64)
    done = td["next", "done"].squeeze(-1)
    assert 10 < int(done.sum()) < 60  # episodes end (at most 3 steps on tiny-cascade) and start again
    assert invalid_actions(td) == 0
    # a step after an episode ended starts a new one, at the first decision point
    after = torch.nonzero(done[:-1]).squeeze(-1) + 1
    assert (td["position"][after].argmax(-1) == 0).all()


@pytest.mark.parametrize("mode", ["SameStep", "Disabled"])
def test_gym_wrapper_over_the_native_vector_env(mode: str) -> None:
    def make():  # noqa: ANN202
        return GymWrapper(gym.make_vec(ID, num_envs=4, vectorization_mode="vector_entry_point",
                                       autoreset_mode=mode, backbone="tiny-cascade"))

    check_env_specs(make())
    env = make().append_transform(ActionMask())
    check_env_specs(env)
    env.set_seed(0)
    td = env.rollout(20, break_when_any_done=False)
    assert td.batch_size == torch.Size([4, 20])
    assert td["action_mask"].shape == (4, 20, 3) and td["next", "reward"].shape == (4, 20, 1)
    done = td["next", "done"].squeeze(-1)
    assert int(done.sum()) > 8 and done.any(-1).all()  # every slot ends episodes and goes on
    assert invalid_actions(td) == 0
    first = td["position"][:, 1:][done[:, :-1]]
    assert (first.argmax(-1) == 0).all()  # the step after a done is a fresh episode
    if mode == "Disabled":
        # torchrl restarts the ended slots itself (reset with reset_mask); the terminal observation is
        # the true one (under SameStep torchrl 0.14 zero-fills a Dict observation's terminal step)
        assert (td["next", "position"][done].sum(-1) == 1).all()


def test_the_readme_recipe_runs_as_written() -> None:
    namespace: dict = {}
    exec(compile(readme_block("torchrl-recipe"), "README.md: torchrl-recipe", "exec"), namespace)
    td = namespace["td"]
    assert td.batch_size == torch.Size([16, 100]) and invalid_actions(td) == 0
    check_env_specs(namespace["env"])
