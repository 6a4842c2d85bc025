import torch

from ddpm_signrelu.metrics import knn_precision_recall, near_copies


def test_precision_recall_of_a_set_with_itself_is_one():
    x = torch.randn(200, 5)
    assert knn_precision_recall(x, x.clone()) == (1.0, 1.0)


def test_precision_recall_of_far_sets_is_zero_and_mode_collapse_lowers_recall():
    real = torch.randn(300, 4)
    assert knn_precision_recall(real, real + 100) == (0.0, 0.0)
    collapsed = real[:10].repeat(30, 1)
    precision, recall = knn_precision_recall(real, collapsed)
    assert precision == 1.0 and recall < 0.2


def test_near_copies():
    train = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    samples = torch.tensor([[0.5, 0.0], [5.0, 0.2], [0.1, 9.0]])
    assert near_copies(samples, train).tolist() == [True, False, True]
