"""How each frame sampler runs a forward: uniform, saliency (glance, top-k), early stop (train and eval).

:class:`SamplerForwardsMixin` holds the per-sampler passes of
:class:`~adaptive_hf.video.modeling.FrameSamplingVideoClassifier`, which keeps the model's assembly (backbone, glance
network, pooling, gate, weights, costs) and dispatches its ``forward`` here by ``config.sampler``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers.utils import ModelOutput

from ..core.flops import frame_sampling_flops
from .samplers import coverage_order, gumbel_like, plackett_luce_log_prob, relaxed_topk, uniform_indices
from .sources import FrameSource, TensorFrameSource


@dataclass
class FrameSamplingVideoClassifierOutput(ModelOutput):
    """Output of :class:`~adaptive_hf.video.modeling.FrameSamplingVideoClassifier`.

    Args:
        loss: Training objective when ``labels`` are given (cross-entropy plus the glance, policy and gate terms in
            training). In eval mode, the cross-entropy of the returned logits.
        logits: ``(batch, num_labels)``.
        frames_used: ``(batch,)`` frames the backbone ran on per video.
        frame_indices: ``(batch, frame_budget)`` the frames it ran on (in the order processed; ``-1`` pads videos
            that stopped early).
        frame_scores: ``(batch, T)`` glance scores when the glance network ran, else ``None``.
        flops: ``(batch,)`` theoretical FLOPs spent per video, glance and gate included.
        frames_decoded: ``(batch,)`` frames the video decoder produced per video (glance and backbone passes) when
            the frames came from a decoding ``frame_source``, else ``None``.
    """

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    frames_used: torch.Tensor | None = None
    frame_indices: torch.Tensor | None = None
    frame_scores: torch.Tensor | None = None
    flops: torch.Tensor | None = None
    frames_decoded: torch.Tensor | None = None


class SamplerForwardsMixin:
    """The sampler passes of a frame-sampling video classifier.

    The host model provides ``config``, ``device``, ``training``, ``backbone``, ``gate``, ``uses_hf_video``,
    ``frame_costs``, ``frame_features``, ``classify``, ``_aggregate`` and ``_glance``.
    """

    def _costs_tensor(self, source, frames_used, glance_frames, classifier_evals, gate_evals) -> torch.Tensor:
        costs = self.frame_costs(source.frame_shape)
        flops = frame_sampling_flops(
            frames_used.to(torch.float64),
            costs["frame"],
            glance_frames=glance_frames,
            glance_frame_flops=costs["glance"],
            classifier_evals=classifier_evals,
            classifier_flops=costs["classifier"],
            gate_evals=gate_evals,
            gate_flops=costs["gate"],
        )
        return flops if isinstance(flops, torch.Tensor) else torch.full_like(frames_used, flops, dtype=torch.float64)

    @staticmethod
    def _gather(source: FrameSource, indices: torch.Tensor) -> torch.Tensor:
        """``(batch * k, C, H, W)`` frames at ``indices`` ``(batch, k)`` of every video of ``source``."""
        return source.frames(torch.arange(indices.size(0), device=indices.device), indices).to(indices.device)

    def _classify_clip(self, source, indices, weights=None) -> torch.Tensor:
        """HF video model on the chosen frames ``(batch, k)`` (temporal order); ``weights`` scale the frames
        (straight-through: value 1, so the gradient reaches the scorer)."""
        clip = self._gather(source, indices).view(*indices.shape, *source.frame_shape)
        if weights is not None:
            clip = clip * weights[:, :, None, None, None].to(clip.dtype)
        return self.backbone(pixel_values=clip).logits

    def _forward_uniform(self, source, labels, budget):
        batch, steps = source.num_videos, source.num_frames
        indices = uniform_indices(steps, budget, self.device).expand(batch, budget)
        if self.uses_hf_video:
            logits = self._classify_clip(source, indices)
        else:
            features = self.frame_features(self._gather(source, indices)).view(batch, budget, -1)
            logits = self.classify(self._aggregate(features))
        loss = F.cross_entropy(logits, labels) if labels is not None else None
        frames_used = torch.full((batch,), budget, dtype=torch.long, device=logits.device)
        flops = self._costs_tensor(source, frames_used, 0, 1, 0)
        return FrameSamplingVideoClassifierOutput(loss, logits, frames_used, indices.contiguous(), None, flops)

    def _forward_saliency(self, source, labels, budget):
        config = self.config
        batch, steps = source.num_videos, source.num_frames
        scores, glance_logits = self._glance(source)
        if glance_logits.size(1) < budget:
            raise ValueError(
                f"The glance pass scored {glance_logits.size(1)} frames per video, fewer than `frame_budget` "
                f"({budget}): lower the frame budget or glance at more frames (a smaller glance stride)."
            )
        weights = None
        if self.training:
            keys = scores + gumbel_like(scores)  # a Gumbel top-k draw explores other frame sets while training
            ordered = keys.detach().topk(budget, dim=1).indices
        else:
            ordered = scores.topk(budget, dim=1).indices
        indices, order = ordered.sort(dim=1)  # temporal order: what an HF video model expects
        if self.training and config.sampler_training == "relaxed_topk":
            soft = relaxed_topk(keys, budget, config.topk_temperature).gather(1, indices)
            # Straight-through: the forward value stays 1 (the hard choice), the gradient is the relaxation's.
            weights = 1.0 + soft - soft.detach()
        if self.uses_hf_video:
            logits = self._classify_clip(source, indices, weights)
        else:
            features = self.frame_features(self._gather(source, indices)).view(batch, budget, -1)
            logits = self.classify(self._aggregate(features, weights))
        loss = None
        if labels is not None:
            per_video = F.cross_entropy(logits, labels, reduction="none")
            loss = per_video.mean()
            if self.training:
                if config.glance_loss_weight > 0:
                    frame_labels = labels[:, None].expand(batch, steps).reshape(-1)
                    glance_loss = F.cross_entropy(glance_logits.flatten(0, 1), frame_labels)
                    loss = loss + config.glance_loss_weight * glance_loss
                if config.glance_usefulness_weight > 0:
                    usefulness = self._usefulness_loss(source.pixel_values, scores, labels)
                    loss = loss + config.glance_usefulness_weight * usefulness
                if config.sampler_training == "reinforce":
                    reward = -per_video.detach()
                    advantage = reward - reward.mean()
                    log_prob = plackett_luce_log_prob(scores, ordered)
                    loss = loss - config.policy_loss_weight * (advantage * log_prob).mean()
        frames_used = torch.full((batch,), budget, dtype=torch.long, device=logits.device)
        flops = self._costs_tensor(source, frames_used, glance_logits.size(1), 1, 0)
        return FrameSamplingVideoClassifierOutput(loss, logits, frames_used, indices, scores.detach(), flops)

    def _usefulness_loss(self, pixel_values, scores, labels, frame_logits=None) -> torch.Tensor:
        """SCSampler-style glance supervision: ``sigmoid(score)`` of each frame regresses (binary cross-entropy)
        the backbone's probability of the true class on that frame alone, computed without gradient (training
        only; the backbone then runs on every frame, which is the price of the supervision)."""
        batch, steps = scores.shape
        if frame_logits is None:
            with torch.no_grad():
                features = self.frame_features(pixel_values.flatten(0, 1))
                frame_logits = self.backbone.get_classifier()(features).view(batch, steps, -1)
        target = torch.softmax(frame_logits.detach().float(), -1).gather(
            -1, labels[:, None, None].expand(batch, steps, 1)
        )
        return F.binary_cross_entropy_with_logits(scores, target.squeeze(-1).to(scores.dtype))

    def _frame_order(self, source) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """``(batch, T)`` processing order for ``early_stop``, and the glance scores/logits when they ran (frames
        the glance did not see score ``-inf``: they come last, in temporal order)."""
        batch, steps = source.num_videos, source.num_frames
        order = self.config.frame_order
        if order == "glance":
            scores, glance_logits = self._glance(source)
            return scores.detach().argsort(dim=1, descending=True, stable=True), scores, glance_logits
        base = coverage_order(steps) if order == "coverage" else torch.arange(steps)
        return base.to(self.device).expand(batch, steps), None, None

    @staticmethod
    def _chunk_ends(budget: int, frames_per_step: int) -> list[int]:
        """Frames processed after each early-stop step: ``k, 2k, ...``, ending at ``budget``."""
        return list(range(frames_per_step, budget, frames_per_step)) + [budget]

    def _train_early_stop(self, pixel_values, labels, budget):
        config = self.config
        batch, steps = pixel_values.shape[:2]
        source = TensorFrameSource(pixel_values)
        order, scores, glance_logits = self._frame_order(source)
        indices = order[:, :budget]
        features = self.frame_features(self._gather(source, indices)).view(batch, budget, -1)
        # Every prefix that inference can stop after (one per chunk of frames_per_step frames) is classified: the
        # classifier must be right early, and the gate learns when it is.
        ends = torch.tensor(self._chunk_ends(budget, config.frames_per_step), device=features.device)
        num_steps = len(ends)
        prefix = torch.arange(budget, device=features.device)[None] < ends[:, None]
        expanded = features[:, None].expand(batch, num_steps, budget, features.size(-1)).flatten(0, 1)
        masks = prefix[None].expand(batch, num_steps, budget).flatten(0, 1)
        pooled = self._aggregate(expanded, mask=masks)
        step_logits = self.classify(pooled).view(batch, num_steps, -1)
        gate_logits = self.gate(pooled, step_logits.flatten(0, 1)).view(batch, num_steps)
        logits = step_logits[:, -1]
        loss = None
        if labels is not None:
            step_labels = labels[:, None].expand(batch, num_steps)
            step_losses = F.cross_entropy(step_logits.flatten(0, 1), step_labels.reshape(-1), reduction="none")
            loss = step_losses.mean()
            correct = (step_logits.argmax(-1) == step_labels).to(gate_logits.dtype)
            loss = loss + config.gate_loss_weight * F.binary_cross_entropy_with_logits(gate_logits, correct)
            if scores is not None:
                if config.glance_loss_weight > 0:
                    frame_labels = labels[:, None].expand(batch, steps).reshape(-1)
                    glance_loss = F.cross_entropy(glance_logits.flatten(0, 1), frame_labels)
                    loss = loss + config.glance_loss_weight * glance_loss
                # The glance order should put the frames the classifier finds easiest first: match the scores of
                # the processed frames to a softmax over their negated single-frame losses.
                single = self.classify(features.flatten(0, 1)).view(batch, budget, -1)
                frame_labels = labels[:, None].expand(batch, budget).reshape(-1)
                frame_losses = F.cross_entropy(single.flatten(0, 1), frame_labels, reduction="none").view(
                    batch, budget
                )
                target = torch.softmax(-frame_losses.detach(), dim=1)
                chosen_scores = scores.gather(1, indices)
                loss = loss - config.policy_loss_weight * (target * torch.log_softmax(chosen_scores, 1)).sum(1).mean()
                if config.glance_usefulness_weight > 0:
                    usefulness = self._usefulness_loss(pixel_values, chosen_scores, labels, frame_logits=single)
                    loss = loss + config.glance_usefulness_weight * usefulness
        frames_used = torch.full((batch,), budget, dtype=torch.long, device=logits.device)
        flops = self._costs_tensor(source, frames_used, steps if scores is not None else 0, num_steps, num_steps)
        scores = scores.detach() if scores is not None else None
        return FrameSamplingVideoClassifierOutput(loss, logits, frames_used, indices.contiguous(), scores, flops)

    def _eval_early_stop(self, source, labels, budget):
        config = self.config
        batch = source.num_videos
        device = self.device
        order, scores, glance_logits = self._frame_order(source)
        order = order[:, :budget]
        buffer = None
        logits_out = None
        frames_used = torch.zeros(batch, dtype=torch.long, device=device)
        classifier_evals = torch.zeros(batch, dtype=torch.long, device=device)
        gate_evals = torch.zeros(batch, dtype=torch.long, device=device)
        chosen = torch.full((batch, budget), -1, dtype=torch.long, device=device)
        active = torch.arange(batch, device=device)
        start = 0
        for end in self._chunk_ends(budget, config.frames_per_step):
            frame_index = order.index_select(0, active)[:, start:end]
            # Only the videos still running are gathered: finished ones never reach the backbone again. A chunk of
            # frames_per_step frames per video goes to the backbone in one call.
            frames = source.frames(active, frame_index).to(device)
            features = self.frame_features(frames).view(active.numel(), end - start, -1)
            if buffer is None:
                buffer = features.new_zeros(batch, budget, features.size(-1))
                logits_out = features.new_empty(batch, config.num_labels)
            buffer[active, start:end] = features
            pooled = self._aggregate(buffer.index_select(0, active)[:, :end])
            logits = self.classify(pooled)
            frames_used[active] = end
            classifier_evals[active] += 1
            chosen[active, start:end] = frame_index
            start = end
            if end == budget:
                logits_out[active] = logits.to(logits_out.dtype)
                break
            if end < config.min_frames:
                continue
            gate_evals[active] += 1
            stop = torch.sigmoid(self.gate(pooled, logits)) >= config.exit_threshold
            if bool(stop.any()):
                logits_out[active[stop]] = logits[stop].to(logits_out.dtype)
                active = active[~stop]
                if active.numel() == 0:
                    break
        loss = F.cross_entropy(logits_out, labels) if labels is not None else None
        glanced = glance_logits.size(1) if glance_logits is not None else 0
        flops = self._costs_tensor(source, frames_used, glanced, classifier_evals, gate_evals)
        scores = scores.detach() if scores is not None else None
        return FrameSamplingVideoClassifierOutput(loss, logits_out, frames_used, chosen, scores, flops)
