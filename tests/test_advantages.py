import pytest
import torch

from cegppo_edu.advantages import group_advantages, zero_variance_groups


def test_group_advantages_normalise_each_group():
    rewards = torch.tensor([1.0, -1.0, -1.0, -1.0, 1.0, 1.0, 1.0, 1.0])
    adv = group_advantages(rewards, group_size=4)
    first = rewards[:4]
    expected = (first - first.mean()) / (first.std() + 1e-6)
    torch.testing.assert_close(adv[:4], expected)
    assert torch.all(adv[4:] == 0)  # a zero-variance group carries no signal
    assert adv[:4].sum().abs() < 1e-6


def test_dr_grpo_advantages_are_only_centred():
    rewards = torch.tensor([3.0, 1.0, 0.0, 0.0])
    torch.testing.assert_close(group_advantages(rewards, 2, scale_by_std=False), torch.tensor([1.0, -1.0, 0.0, 0.0]))


def test_zero_variance_groups():
    rewards = torch.tensor([1.0, 1.0, 1.0, 0.0, 0.5, 0.5, -1.0, -1.0, -1.0])
    assert zero_variance_groups(rewards, 3).tolist() == [True, True, True, False, False, False, True, True, True]


@pytest.mark.parametrize("rewards,group_size,name", [
    (torch.ones(6), 4, "group_size=4"),
    (torch.ones(6), 1, "group_size"),
    (torch.ones(2, 3), 3, "rewards"),
    (torch.tensor([1.0, float("nan")]), 2, "rewards"),
])
def test_bad_input(rewards, group_size, name):
    with pytest.raises(ValueError, match=name):
        group_advantages(rewards, group_size)
