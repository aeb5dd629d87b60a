"""The automatic switch (off unless a model's config has ``switch``): a pure rule.

It reads the last ``after`` verdicts (True: agreed) since the mode last changed and
both sides' p99, and answers the mode to move to with the reason, or None. As TF
Serving's version policies are, it is stateless, so a table of cases tests it.
"""

from __future__ import annotations

from collections.abc import Sequence

from onnx_serving.server.api.shadow.config import Mode, SwitchRule


def next_mode(mode: Mode, rule: SwitchRule, verdicts: Sequence[bool],
              our_p99: float | None, baseline_p99: float | None) -> tuple[Mode, str] | None:
    compared = len(verdicts)
    agreed = sum(verdicts)
    if mode == "shadow" and compared >= rule.after:
        agreement = agreed / compared
        if agreement < rule.min_agreement or our_p99 is None or baseline_p99 is None:
            return None
        if our_p99 <= baseline_p99:
            return "candidate", (
                f"{agreed} of the last {compared} compared requests agreed "
                f"({agreement:.4f} >= {rule.min_agreement}) and our p99 "
                f"{our_p99 * 1000:.2f} ms <= the baseline's {baseline_p99 * 1000:.2f} ms"
            )
    if mode == "candidate":
        allowed = round((1.0 - rule.revert_below) * rule.after, 9)  # 1 - 0.8 is 0.19999...
        if compared - agreed > allowed:
            return "shadow", (
                f"{compared - agreed} of the last {compared} compared requests disagreed, "
                f"more than {allowed:g} (revert_below {rule.revert_below} of {rule.after})"
            )
    return None
