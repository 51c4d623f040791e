"""The edge's cost of choosing: operation counts against hand derivations, and the pinned timing."""

from __future__ import annotations

import math

import torch

from sagebench.cost import EdgeDims, add_e2e_latency, edge_forward_macs, importance_macs, measure_edge_cost
from sagebench.strategies import get_strategy
from sagebench.testing import make_evidence
from sagebench.transmission.codecs import RawCodec

# the embedded CIFAR-10 edge: 8x8 = 64 patches of 4x4x3 pixels, width 96, 4 blocks of 3 heads, MLP 192, 10 classes
EDGE = EdgeDims(num_patches=64, dim=96, depth=4, heads=3, num_prefix=1, patch_pixels=48, mlp_hidden=192,
                num_classes=10)


def test_sage_counts_farthest_point_sampling_over_its_candidates():
    # sage at B=16, prefilter 2: K = ceil(2 * 16) = 32 candidates of D = 96.
    # Farthest-point sampling needs the K squared norms (K D = 32 * 96 = 3072 MACs) and, for each of the
    # B - 1 = 15 picks after the first, its dot products with the K candidates (15 * 32 * 96 = 46080 MACs):
    # 3072 + 46080 = 49152 = B K D. The attention sort: comparisons, no MACs; last-layer attention: 0.
    assert get_strategy("sage").selection_macs(16, EDGE) == 49152
    # prefilter 1.5 at B=5: K = ceil(7.5) = 8 -> 5 * 8 * 96 = 3840
    assert get_strategy("sage", prefilter=1.5).selection_macs(5, EDGE) == 3840
    # K is clipped to N: B=48, prefilter 2 -> K = 64 -> 48 * 64 * 96 = 294912
    assert get_strategy("sage").selection_macs(48, EDGE) == 294912


def test_attention_prefix_counts_only_the_rollout_it_needs():
    # last-layer attention comes with the edge's forward and the top-B is a sort: 0 MACs
    assert get_strategy("attention_prefix").selection_macs(16, EDGE) == 0
    # rollout: the CLS row of A_4 A_3 A_2 A_1 as a row vector through L - 1 = 3 products of T x T = 65 x 65:
    # 3 * 65 * 65 = 12675 MACs, whatever the budget
    assert get_strategy("attention_prefix", importance="rollout").selection_macs(16, EDGE) == 12675
    assert get_strategy("attention_prefix", importance="rollout").selection_macs(1, EDGE) == 12675
    # one chain per head (H = 3): 3 * 12675
    assert get_strategy("attention_prefix", importance="rollout_per_head").selection_macs(16, EDGE) == 38025
    # sage with rollout adds the same 12675 to its B K D
    assert get_strategy("sage", importance="rollout").selection_macs(16, EDGE) == 49152 + 12675
    assert importance_macs("last_layer", EDGE) == 0


def test_content_blind_strategies_cost_nothing_and_unknown_is_none():
    assert get_strategy("random").selection_macs(16, EDGE) == 0
    assert get_strategy("uniform").selection_macs(16, EDGE) == 0
    assert get_strategy("diversity_only").selection_macs(16, EDGE) == 16 * 64 * 96
    assert get_strategy("tome").selection_macs(16, EDGE) is None  # no derivation given: shown as unknown


def test_the_edge_forward_count_by_hand():
    import timm

    import sagebench.demo.models  # noqa: F401  (registers the embedded models with timm)

    assert EdgeDims.of(timm.create_model("sagebench_cifar10_edge", pretrained=False)) == EDGE
    # T = 65 tokens, D = 96, M = 192: per block qkv 3*65*96^2 = 1797120, scores and attention x values
    # 2 * 65^2 * 96 = 811200, projection 65*96^2 = 599040, MLP 2*65*96*192 = 2396160 -> 5603520;
    # 4 blocks = 22414080; patch embedding 64 * 48 * 96 = 294912; head 96 * 10 = 960
    assert edge_forward_macs(EDGE) == 22414080 + 294912 + 960


def test_the_timing_is_pinned_to_one_thread_and_recorded_per_cell():
    threads = torch.get_num_threads()
    evidence = make_evidence(grid=(8, 8), b=3, dim=96)
    images = torch.randn(3, 3, 32, 32)
    block = measure_edge_cost([get_strategy("sage"), get_strategy("best_of_random_oracle")], [4, 16], evidence,
                              images, (4, 4), RawCodec(), EDGE, repeats=2, max_seconds=30.0)
    assert torch.get_num_threads() == threads  # restored
    assert block["hardware"]["torch_threads"] == 1 and block["hardware"]["machine_dependent"]
    cells = {(c["strategy"], c["budget"]): c for c in block["cells"]}
    assert cells[("sage", 16)]["selection_macs"] == 49152 and cells[("sage", 16)]["select_ms"] > 0
    assert cells[("sage", 16)]["encode_ms"] > 0
    oracle = cells[("best_of_random_oracle", 4)]
    assert oracle["select_ms"] is None and "oracle" in oracle["note"]
    assert math.isclose(cells[("sage", 4)]["selection_macs_per_edge_forward"],
                        4 * 8 * 96 / block["edge_model"]["macs"])
    # no time left: the cells are reported, untimed, and the block says so
    late = measure_edge_cost([get_strategy("sage")], [4], evidence, images, (4, 4), RawCodec(), EDGE,
                             max_seconds=0.0)
    assert late["truncated"] and late["cells"][0]["select_ms"] is None


def test_e2e_latency_adds_the_edge_time_to_each_channel():
    results = [{"strategy": "sage", "budget": 4, "latency_ms": {"lte": 50.0, "wifi": 5.0}},
               {"strategy": "oracle", "budget": 4, "latency_ms": {"lte": 50.0}}]
    block = {"cells": [{"strategy": "sage", "budget": 4, "select_ms": 1.25, "encode_ms": 0.25},
                       {"strategy": "oracle", "budget": 4, "select_ms": None, "encode_ms": None}]}
    add_e2e_latency(results, block)
    assert block["cells"][0]["e2e_latency_ms"] == {"lte": 51.5, "wifi": 6.5}
    assert block["cells"][1]["e2e_latency_ms"] == {"lte": None}
    assert "e2e_latency_ms" not in results[0]  # results rows hold only what the records determine


def test_wandb_gets_the_edge_cost_per_cell():
    from sagebench.reporting.wandb import edge_cost_metrics

    results = {"edge_cost": {"cells": [{"strategy": "sage", "budget": 16, "selection_macs": 49152, "select_ms": 0.5,
                                        "encode_ms": None, "e2e_latency_ms": {"lte": 21.0, "wifi": None}}]}}
    assert edge_cost_metrics(results) == {"edge_selection_macs/sage/B16": 49152, "edge_select_ms/sage/B16": 0.5,
                                          "e2e_latency_ms_lte/sage/B16": 21.0}
