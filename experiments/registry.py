"""The one table of study name -> summary function (experiments.common.Summary).

A new study is a folder experiments/<name>/ (study.yaml, README.md, summarise.py with
`summarise(sweep, out_dir) -> str`) and one entry here; tests/test_studies.py checks that
the table and the folders with a study.yaml agree.
"""

from __future__ import annotations

from experiments.activation_zoo import summarise as activation_zoo
from experiments.common import StudyError, Summary
from experiments.criticality import summarise as criticality
from experiments.dying_relu import summarise as dying_relu
from experiments.dyt_vs_layernorm import summarise as dyt_vs_layernorm
from experiments.edge_of_stability import summarise as edge_of_stability
from experiments.gelu_vs_swish import summarise as gelu_vs_swish
from experiments.init_x_activation import summarise as init_x_activation
from experiments.modern_ffn import summarise as modern_ffn
from experiments.modern_ffn_lm import summarise as modern_ffn_lm
from experiments.normalisation import summarise as normalisation
from experiments.output_heads import summarise as output_heads
from experiments.plasticity import summarise as plasticity
from experiments.playground import summarise as playground
from experiments.recommender import summarise as recommender
from experiments.vanishing_gradients import summarise as vanishing_gradients
from experiments.width_transfer import summarise as width_transfer

SUMMARIES: dict[str, Summary] = {
    "activation_zoo": activation_zoo.summarise,
    "criticality": criticality.summarise,
    "dying_relu": dying_relu.summarise,
    "dyt_vs_layernorm": dyt_vs_layernorm.summarise,
    "edge_of_stability": edge_of_stability.summarise,
    "gelu_vs_swish": gelu_vs_swish.summarise,
    "init_x_activation": init_x_activation.summarise,
    "modern_ffn": modern_ffn.summarise,
    "modern_ffn_lm": modern_ffn_lm.summarise,
    "normalisation": normalisation.summarise,
    "output_heads": output_heads.summarise,
    "plasticity": plasticity.summarise,
    "playground": playground.summarise,
    "recommender": recommender.summarise,
    "vanishing_gradients": vanishing_gradients.summarise,
    "width_transfer": width_transfer.summarise,
}


def summary_for(study: str) -> Summary:
    """The summary function of a study; StudyError listing the known studies if it has none."""
    try:
        return SUMMARIES[study]
    except KeyError:
        raise StudyError(f"unknown study {study!r}; known: {', '.join(sorted(SUMMARIES))}"
                         ) from None
