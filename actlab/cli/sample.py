"""actlab-sample RUN_DIR --prompt TEXT: a trained causal model's continuation of a prompt.

The run's network is its newest checkpoint (train.checkpoint_every > 0 writes one at the
last step too); a run that kept none is retrained deterministically to its last step
(actlab.runs.retrain: batches are keyed by the step, so the parameters equal the run's).
The prompt is encoded with the run's tokenizer, the model continues it token by token
(models.gpt.generate: greedy at temperature 0, else drawn from softmax(logits / T) with
--seed), and the prompt and its continuation are printed as one text.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from actlab.errors import UserError


class SampleError(UserError):
    """A run that cannot be sampled from (one line)."""


def final_network(run_dir: Path, member: int = 0) -> tuple[Any, Any, Any, int]:
    """(experiment, params, model state, step) of one member of a run at its newest
    checkpoint, or retrained to its last step when it kept none."""
    import jax

    from actlab.analysis import run_config
    from actlab.config import Config
    from actlab.engine.experiment import build, initial_state
    from actlab.engine.state import member as one_member
    from actlab.runs import checkpoint, retrain

    cfg = run_config(run_dir)
    if not cfg:
        raise SampleError(f"{run_dir} holds no run (no summary.json or .hydra/config.yaml)")
    config = Config.from_dict(cfg)
    exp = build(config)
    n = len(exp.members)
    if not 0 <= member < n:
        raise SampleError(f"--member {member}: the run has members 0..{n - 1}")
    step = checkpoint.latest_step(run_dir)
    if step is not None:
        ckpts = checkpoint.Checkpoints(run_dir)
        try:
            state = ckpts.restore(step, initial_state(exp))
        finally:
            ckpts.close()
        one = one_member(state, member)
        return exp, one.params, one.model_state, step
    step = exp.config.train.steps
    print(f"{run_dir} kept no checkpoint: retraining it to step {step}", file=sys.stderr,
          flush=True)
    exp, snaps = retrain.retrain(config, [step], exp.dataset)
    snap = jax.tree.map(lambda a: a[member], snaps[step])
    return exp, snap["params"], snap["model_state"], step


def sample(run_dir: str | Path, prompt: str, tokens: int = 200, temperature: float = 0.0,
           seed: int = 0, member: int = 0) -> str:
    """The prompt followed by `tokens` tokens of the run's continuation, as text."""
    import jax

    from actlab.analysis import run_config
    from actlab.models import CAUSAL_MODELS
    from actlab.models.gpt import generate

    run_dir = Path(run_dir)
    model = (run_config(run_dir).get("model") or {}).get("name")
    if model is not None and model not in CAUSAL_MODELS:
        raise SampleError(f"{run_dir} trained model={model}; actlab-sample continues text "
                          f"with a causal model (model={' or model='.join(CAUSAL_MODELS)})")
    if tokens < 1:
        raise SampleError(f"--tokens must be >= 1, got {tokens}")
    if temperature < 0:
        raise SampleError(f"--temperature must be >= 0, got {temperature}")
    exp, params, model_state, _ = final_network(run_dir, member)
    tok = exp.dataset.meta["tokenizer"]
    ids = tok.encode(prompt)
    if ids.size == 0:
        raise SampleError("--prompt holds no token; give at least one character")
    out = generate(exp.model, params, model_state, ids, tokens, temperature,
                   jax.random.PRNGKey(seed))
    return prompt + tok.decode(out)


def sample_main(argv: list[str] | None = None) -> None:
    """actlab-sample: print a trained causal model's continuation of --prompt."""
    from actlab.cli import parser

    p = parser("actlab-sample",
               "Continue a prompt with the causal language model of a run directory of "
               "actlab-train (model=gpt on a text dataset): its newest checkpoint, or the run "
               "retrained to its last step when it kept none. Prints the prompt and its "
               "continuation.",
               ["actlab-train model=gpt dataset=text train.checkpoint_every=1000 "
                "hydra.run.dir=outputs/lm",
                "actlab-sample outputs/lm --prompt 'The \"if\" statement'          # greedy",
                "actlab-sample outputs/lm --prompt 'def ' --temperature 0.8 --seed 1"])
    p.add_argument("run_dir", help="a run directory of actlab-train with model=gpt")
    p.add_argument("--prompt", required=True, help="text the model continues")
    p.add_argument("--tokens", type=int, default=200, help="tokens to generate (200)")
    p.add_argument("--temperature", type=float, default=0.0,
                   help="softmax temperature; 0 (the default): the most likely token each time")
    p.add_argument("--seed", type=int, default=0, help="seed of the draws (temperature > 0)")
    p.add_argument("--member", type=int, default=0, help="which member of the run (0)")
    args = p.parse_args(argv)
    try:
        text = sample(args.run_dir, args.prompt, args.tokens, args.temperature, args.seed,
                      args.member)
    except (FileNotFoundError, UserError) as e:
        print(f"actlab-sample: error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    print(text)
