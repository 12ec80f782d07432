"""The long-video heads: exact padding masks, weights, and that each head can find a score carried by one clip."""

import pytest
import torch
from scipy.stats import spearmanr

from aqa_cli.models.long_heads import (
    AttnHead,
    GDLTHead,
    MaskedAttentionPool,
    _attention,
    build_long_head,
    gdlt_triplet_loss,
)
from aqa_cli.training.config import gdlt_head_options
from aqa_cli.util.errors import AqaError

D = 16


def _heads():
    torch.manual_seed(0)
    return {
        "attn": AttnHead(D, hidden=32, width=16, attn_hidden=8, dropout=0.2, mean_path=True),
        "gdlt": GDLTHead(
            D, width=16, proj_hidden=32, heads=2, encoder_layers=2, decoder_layers=2, dropout=0.3
        ),
        "gdlt-softmax": GDLTHead(D, width=16, proj_hidden=None, heads=4, weighting="softmax"),
        "gdlt-code": GDLTHead(D, width=16, proj_hidden=32, heads=2, dropout=0.0, **gdlt_head_options("code")),
    }


@pytest.mark.parametrize("name", ["attn", "gdlt", "gdlt-softmax", "gdlt-code"])
@pytest.mark.parametrize("fill", [0.0, 1e4, float("nan"), float("inf")])
def test_padding_changes_no_output(name, fill):
    head = _heads()[name].eval()
    torch.manual_seed(1)
    lengths = torch.tensor([5, 9, 3])
    real = torch.randn(3, 9, D)
    mask = torch.arange(9)[None, :] < lengths[:, None]
    padded = torch.cat([real, torch.randn(3, 7, D)], dim=1)
    padded[:, :9][~mask] = torch.randn(int((~mask).sum()), D)
    padded[:, 9:] = fill
    padded[:, :9][~mask] = fill
    padded_mask = torch.cat([mask, torch.zeros(3, 7, dtype=torch.bool)], dim=1)
    with torch.no_grad():
        out = head(torch.where(mask[..., None], real, 0.0), mask)
        out_padded = head(padded, padded_mask)
        singles = [head(real[i : i + 1, : lengths[i]]) for i in range(3)]  # no padding at all
    torch.testing.assert_close(out_padded.score, out.score, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out_padded.clip_weights[:, :9], out.clip_weights, rtol=1e-5, atol=1e-7)
    for i, single in enumerate(singles):
        torch.testing.assert_close(single.score, out.score[i : i + 1], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(
            single.clip_weights[0], out.clip_weights[i, : lengths[i]], rtol=1e-5, atol=1e-7
        )
    weights = out_padded.clip_weights
    assert torch.all(weights[~padded_mask] == 0)
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(3))
    assert torch.all(weights[padded_mask] > 0)


@pytest.mark.parametrize("name", ["attn", "gdlt", "gdlt-code"])
def test_padding_changes_no_gradient(name):
    head = _heads()[name].train()
    torch.manual_seed(2)
    real = torch.randn(2, 6, D)
    mask = torch.tensor([[True] * 6, [True] * 4 + [False] * 2])
    padded = torch.cat([real, torch.full((2, 3, D), float("nan"))], dim=1)
    padded[1, 4:6] = float("nan")
    padded_mask = torch.cat([mask, torch.zeros(2, 3, dtype=torch.bool)], dim=1)
    grads = []
    for x, m in ((torch.where(mask[..., None], real, 0.0), mask), (padded, padded_mask)):
        head.zero_grad()
        head.eval()  # no dropout: the same computation on the real positions
        out = head(x, m)
        (out.score.sum() + (gdlt_triplet_loss(out.embed) if out.embed is not None else 0)).backward()
        grads.append([p.grad.clone() for p in head.parameters() if p.grad is not None])
    for a, b in zip(*grads, strict=True):
        assert torch.isfinite(b).all()
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_batchnorm_statistics_come_from_the_real_clips_only():
    """In training, the code layout's BatchNorm normalizes with the batch's real clips: padding of any width
    and content changes neither the outputs nor the running statistics."""
    torch.manual_seed(3)
    real = torch.randn(3, 7, D)
    mask = torch.arange(7)[None, :] < torch.tensor([7, 4, 2])[:, None]
    padded = torch.cat([real, torch.full((3, 5, D), float("nan"))], dim=1)
    padded[:, :7][~mask] = float("inf")
    padded_mask = torch.cat([mask, torch.zeros(3, 5, dtype=torch.bool)], dim=1)
    outputs, statistics = [], []
    for x, m in ((torch.where(mask[..., None], real, 0.0), mask), (padded, padded_mask)):
        head = _heads()["gdlt-code"].train()
        outputs.append(head(x, m).score)
        statistics.append(head.clip_layers[1].running_mean.clone())
    torch.testing.assert_close(outputs[1], outputs[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(statistics[1], statistics[0])
    first_layer = _heads()["gdlt-code"].clip_layers[0]
    expected = 0.9 * 0 + 0.1 * first_layer(real[mask]).mean(dim=0)  # momentum 0.1 from zeros
    torch.testing.assert_close(statistics[0], expected.detach(), rtol=1e-4, atol=1e-6)


def test_attention_weight_dropout_mixes_the_values_but_reports_the_undropped_weights():
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 3, 8), torch.randn(2, 5, 8), torch.randn(2, 5, 8)
    mask = torch.tensor([[True] * 5, [True, True, True, False, False]])
    out, weights = _attention(q, k, v, mask, heads=2)
    doubled, reported = _attention(q, k, v, mask, heads=2, weight_dropout=lambda w: 2 * w)
    torch.testing.assert_close(doubled, 2 * out)  # the values are mixed by what the dropout returns
    assert torch.equal(reported, weights)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 2, 3))
    assert (weights[1, :, :, 3:] == 0).all()
    dropped, reported = _attention(q, k, v, mask, heads=2, weight_dropout=torch.nn.Dropout(0.7).train())
    assert not torch.allclose(dropped, out) and torch.equal(reported, weights)


def test_attention_dropout_adds_no_parameter_and_is_off_in_evaluation():
    plain = GDLTHead(D, width=16, proj_hidden=32, heads=2, dropout=0.7)
    dropping = GDLTHead(D, width=16, proj_hidden=32, heads=2, dropout=0.7, attention_dropout=True)
    dropping.load_state_dict(plain.state_dict())  # the same parameters, strictly
    features = torch.randn(3, 6, D)
    plain.eval(), dropping.eval()
    torch.testing.assert_close(dropping(features).score, plain(features).score)


def test_the_code_layout_starts_as_nn_transformer_and_nn_linear_do():
    """GDLT's code builds nn.Transformer (Xavier over the fused (3E, E) query-key-value matrix, zero
    attention biases) and scores with nn.Linear(E, queries): the code layout draws from the same ranges."""
    width, queries = 64, 4
    torch.manual_seed(0)
    ours = GDLTHead(D, width=width, queries=queries, **gdlt_head_options("code"))
    reference = torch.nn.Transformer(width, 2, 1, 2, 3 * width, batch_first=True)
    fused_bound = (6 / (width + 3 * width)) ** 0.5  # also the feed-forward's: (3E, E) too
    square_bound = (6 / (2 * width)) ** 0.5
    for attention, torch_attention in (
        (ours.encoder[0].attn, reference.encoder.layers[0].self_attn),
        (ours.decoder[1].cross_attn, reference.decoder.layers[1].multihead_attn),
    ):
        qkv = torch.cat([attention.q.weight, attention.k.weight, attention.v.weight])
        for weight, bound in ((qkv, fused_bound), (torch_attention.in_proj_weight, fused_bound)):
            assert 0.97 * bound < weight.abs().max().item() <= bound
        for weight in (attention.o.weight, torch_attention.out_proj.weight):
            assert 0.97 * square_bound < weight.abs().max().item() <= square_bound
        assert all(linear.bias.abs().sum() == 0 for linear in attention.projections())
        assert torch_attention.in_proj_bias.abs().sum() == 0
    feed_forward = ours.decoder[0].ff[0]
    assert 0.97 * fused_bound < feed_forward.weight.abs().max().item() <= fused_bound
    assert feed_forward.bias.abs().sum() > 0  # nn.Linear's default bias, untouched by nn.Transformer
    linear_bound = width**-0.5
    for parameter in (ours.query_logit, ours.query_bias):
        assert 0.5 * linear_bound < parameter.abs().max().item() <= linear_bound
    assert (GDLTHead(D, width=width, queries=queries).query_bias == 0).all()  # our layout: zero biases


def test_attention_pool_alone():
    pool = MaskedAttentionPool(4)
    clips = torch.randn(2, 5, 4)
    mask = torch.tensor([[True, True, False, False, False], [True] * 5])
    video, weights = pool(clips, mask)
    assert video.shape == (2, 4) and weights.shape == (2, 5)
    torch.testing.assert_close(
        video, torch.einsum("nk,nkd->nd", weights, clips.masked_fill(~mask[..., None], 0))
    )


def test_bad_masks_and_names():
    head = _heads()["attn"]
    with pytest.raises(AqaError, match="at least one real clip"):
        head(torch.randn(2, 3, D), torch.tensor([[True, False, False], [False, False, False]]))
    with pytest.raises(AqaError, match="does not match"):
        head(torch.randn(2, 3, D), torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(AqaError, match="unknown long head"):
        build_long_head("lstm", D)
    with pytest.raises(AqaError, match="query weighting"):
        GDLTHead(D, weighting="relu")
    with pytest.raises(AqaError, match="projection norm"):
        GDLTHead(D, projection_norm="group")


def _one_clip_task(n: int, seed: int):
    """Videos of 6..12 noise clips; one clip at a random place has its first channel = the score + 3, the
    others noise. The mean of the clips carries the score only weakly (diluted by a varying length) and
    the clip's position varies, so a mean-pool linear model ranks poorly while attention can find it."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(6, 13, (n,), generator=g)
    x = torch.randn(n, 12, D, generator=g)
    x[:, :, 0] = torch.randn(n, 12, generator=g).abs() * -1.0  # noise in channel 0 is negative
    y = torch.rand(n, generator=g)
    where = (torch.rand(n, generator=g) * lengths).long()
    x[torch.arange(n), where, 0] = 3.0 + 2.0 * y
    x[torch.arange(n), where, 1] = 4.0  # marks the carrying clip
    mask = torch.arange(12)[None, :] < lengths[:, None]
    x = x.masked_fill(~mask[..., None], float("nan"))
    return x, mask, y


@pytest.mark.parametrize("name", ["attn", "gdlt"])
def test_learns_the_one_clip_that_carries_the_score(name):
    torch.manual_seed(0)
    x, mask, y = _one_clip_task(1024, seed=0)  # a transformer memorizes a few hundred videos
    xt, mt, yt = _one_clip_task(128, seed=1)
    if name == "attn":
        head = AttnHead(D, hidden=32, width=16, attn_hidden=16)
    else:
        head = GDLTHead(D, width=16, proj_hidden=32, heads=2, encoder_layers=1, decoder_layers=1, dropout=0.1)
    optimizer = torch.optim.Adam(head.parameters(), lr=3e-3)
    for _ in range(20):
        for batch in torch.randperm(1024).split(64):
            out = head(x[batch], mask[batch])
            loss = torch.nn.functional.mse_loss(out.score, y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    head.eval()
    with torch.no_grad():
        rho = spearmanr(head(xt, mt).score.numpy(), yt.numpy())[0]

    # the mean-pool opponent: least squares on the masked mean of the clips (plus the length)
    def pooled(features, m):
        f = features.masked_fill(~m[..., None], 0).sum(1) / m.sum(1, keepdim=True)
        return torch.cat([f, m.sum(1, keepdim=True).float(), torch.ones(len(f), 1)], dim=1)

    coef = torch.linalg.lstsq(pooled(x, mask), y[:, None]).solution
    rho_mean = spearmanr((pooled(xt, mt) @ coef).squeeze(1).numpy(), yt.numpy())[0]
    assert rho > 0.95, rho
    assert rho_mean < 0.9, rho_mean
