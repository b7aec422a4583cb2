"""The shared tester's registry: every technique x backbone family (see ``adaptive_case.AdaptiveCase``).

``test_shared_invariants.py`` and ``test_shared_fuzz.py`` run over ``CASES``. To add a family or a technique, add
its cases here; every shared invariant and the fuzz then run on it.
"""

from __future__ import annotations

from adaptive_case import AdaptiveCase
from cases_exits_halting import (
    HF_IMAGE_EXIT_FAMILIES,
    TIMM_EXIT_CASES,
    early_exit_decoder_case,
    early_exit_hf_image_case,
    early_exit_hf_vit_case,
    early_exit_text_case,
    early_exit_timm_case,
    halting_decoder_case,
    halting_hf_dinov2_case,
    halting_text_case,
    halting_timm_vit_case,
)
from cases_modernbert import modernbert_cases
from cases_moe_readers_video import HF_VIDEO_CONFIGS, MOE_TEXT_FAMILIES, moe_case, reader_case, video_case
from text_testers import DECODER_FAMILIES, FAMILIES


# ---------------------------------------------------------------------------------------------------- registry
def _all_cases() -> list[AdaptiveCase]:
    cases = [early_exit_text_case(family) for family in FAMILIES]
    cases += [early_exit_timm_case(case) for case in TIMM_EXIT_CASES] + [early_exit_hf_vit_case()]
    cases += [early_exit_hf_image_case(family) for family in HF_IMAGE_EXIT_FAMILIES]
    cases += [
        halting_text_case(family, granularity, method)
        for family in FAMILIES
        for granularity in ("sample", "token")
        for method in ("act", "pondernet")
    ]
    cases += [halting_timm_vit_case(g, m) for g in ("sample", "token") for m in ("act", "pondernet")]
    # DeBERTa-v2/v3: the stock head (pooler + classifier) as the final exit; the conv variant with mean pooling.
    cases += [early_exit_text_case("deberta-v2", head_pooling="pooler"), early_exit_text_case("deberta-v2-conv")]
    cases += [halting_text_case("deberta-v2", g, m) for g in ("sample", "token") for m in ("act", "pondernet")]
    cases += [halting_text_case("deberta-v2-conv", "token", "act"), moe_case("deberta-v2")]
    cases += [halting_hf_dinov2_case(g, m) for g in ("sample", "token") for m in ("act", "pondernet")]
    cases += [moe_case(family) for family in MOE_TEXT_FAMILIES + ["vit", "timm"]] + [moe_case("gpt2", causal_lm=True)]
    cases += [moe_case("dinov2")]
    cases += [reader_case("skim_rnn"), reader_case("jump_lstm")]
    cases += [
        video_case("efficientnet", s, a) for s in ("uniform", "saliency", "early_stop") for a in ("mean", "attention")
    ]
    cases += [video_case("resnet", "uniform")]
    cases += modernbert_cases()
    cases += [video_case(clip, s) for clip in HF_VIDEO_CONFIGS for s in ("uniform", "saliency")]
    # Decoder classifiers (left-padded; llama also right-padded): early exits and per-sample halting.
    cases += [early_exit_decoder_case(family) for family in DECODER_FAMILIES]
    cases += [halting_decoder_case(family, method) for family in DECODER_FAMILIES for method in ("act", "pondernet")]
    cases += [early_exit_decoder_case("llama", left=False), halting_decoder_case("llama", "act", left=False)]
    return cases


CASES: list[AdaptiveCase] = _all_cases()
CASES_BY_NAME = {case.name: case for case in CASES}
