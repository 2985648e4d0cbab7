"""What each attribution method measures, for the report's "Why the methods can disagree".

Only the methods that ran get a sentence: a reader of a ΔAUC-and-LRP audit should not read
about SHAP. A method no note knows (a third-party plugin) is named with a pointer to its own
section.
"""

from __future__ import annotations

METHOD_NOTES: dict[str, str] = {
    "dauc": (
        "ΔAUC asks how much the tagger's separating power drops when a feature is replaced by its "
        "mean over the jets. A feature that is nearly the same in every jet, or whose information "
        "another input also carries, therefore scores close to zero."
    ),
    "mad": (
        "MAD is the mean absolute shift of the output when a feature is replaced by its mean, jet by "
        "jet. Like ΔAUC it measures departures from the mean jet, but it counts their size, not "
        "whether they help to separate signal from background, and it needs no labels."
    ),
    "shap": (
        "SHAP splits each jet's score into additive contributions relative to the mean score over a "
        "reference sample: it measures how a feature moves the output away from the model's mean "
        "behaviour, on a subsample of jets."
    ),
    "lrp": (
        "LRP redistributes the full logit back onto the inputs, so its relevance also contains the "
        "part the network assigns to the mean input. That is why LRP can put a near-constant input "
        "at the top while ΔAUC, MAD and SHAP rank it low."
    ),
    "gradient": (
        "Gradient methods measure how steeply the output changes with each input (integrated "
        "gradients: summed along a path from a baseline jet). An input the output is steep in but "
        "which barely varies between jets ranks high for them and low for ΔAUC."
    ),
}

CLOSING = (
    "When inputs are strongly correlated, replacing one by its mean produces jets the model never "
    "saw, and importance can be shared between the correlated inputs in arbitrary ways; inputs "
    "spanning many orders of magnitude, or mixing categorical and continuous values, have similar "
    "effects. Every method becomes less reliable then, so read low agreement between methods as a "
    "warning about the inputs as much as about the tagger."
)


def method_notes(methods: list[str]) -> list[str]:
    """One paragraph per method that ran, in report order, then the closing caution."""
    known = [METHOD_NOTES[m] for m in methods if m in METHOD_NOTES]
    others = [m for m in methods if m not in METHOD_NOTES]
    if others:
        where = "its own section for what it measures" if len(others) == 1 else \
            "their own sections for what each measures"
        known.append(f"{', '.join(others)}: see {where}.")
    return known + [CLOSING]
