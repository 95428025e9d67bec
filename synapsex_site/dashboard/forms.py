"""Dashboard forms. They coerce browser input into types; the rules behind the values (ranges the
API accepts, readiness, quotas, A/B sums) are applied by the apps' services and serializers, and
their refusals are shown back on these forms."""

from django import forms

from feedback.models import Dataset
from tenants.models import ApiKey
from training.trainer.config import DPO_DEFAULTS, LORA_DEFAULTS, PRESETS, SFT_DEFAULTS

METHOD_CHOICES = [("sft", "SFT: supervised fine-tuning"), ("dpo", "DPO: preference optimisation")]

# The seed's defaults per method, for the form's initial values and its method switch (JS).
METHOD_DEFAULTS = {
    "sft": {
        "lora_r": LORA_DEFAULTS["r"], "lora_alpha": LORA_DEFAULTS["alpha"],
        **{k: SFT_DEFAULTS[k] for k in
           ("epochs", "learning_rate", "batch_size", "warmup_ratio", "weight_decay")},
        "min_feedback_count": 50,
    },
    "dpo": {
        "lora_r": LORA_DEFAULTS["r"], "lora_alpha": LORA_DEFAULTS["alpha"],
        **{k: DPO_DEFAULTS[k] for k in
           ("epochs", "learning_rate", "batch_size", "warmup_ratio", "weight_decay", "beta")},
        "min_preference_pairs": 100,
    },
}


def preset_choices() -> list[tuple[str, str]]:
    return [("", "None (method defaults)")] + [
        (name, name.replace("_", " ").capitalize()) for name in PRESETS
    ]


class TrainingJobForm(forms.Form):
    """Start an SFT or DPO job. Blank numbers fall back to the preset, then the seed's defaults."""

    method = forms.ChoiceField(choices=METHOD_CHOICES, initial="sft")
    preset = forms.ChoiceField(choices=preset_choices, required=False)
    lora_r = forms.IntegerField(label="LoRA r", required=False,
                                help_text="Rank: higher = more capacity")
    lora_alpha = forms.IntegerField(label="LoRA alpha", required=False)
    epochs = forms.IntegerField(required=False)
    learning_rate = forms.FloatField(required=False)
    batch_size = forms.IntegerField(required=False)
    warmup_ratio = forms.FloatField(required=False)
    weight_decay = forms.FloatField(required=False)
    beta = forms.FloatField(required=False, help_text="DPO only: strength of the preference")
    min_feedback_count = forms.IntegerField(required=False, label="Minimum feedback (SFT)")
    min_preference_pairs = forms.IntegerField(required=False,
                                              label="Minimum preference pairs (DPO)")

    SFT_ONLY = {"min_feedback_count"}
    DPO_ONLY = {"beta", "min_preference_pairs"}
    PARAM_FIELDS = ["lora_r", "lora_alpha", "epochs", "learning_rate", "batch_size",
                    "warmup_ratio", "weight_decay", "beta", "min_feedback_count",
                    "min_preference_pairs"]

    def params(self) -> dict:
        """The train endpoints' parameters for this method (the preset travels separately)."""
        method = self.cleaned_data["method"]
        skip = self.DPO_ONLY if method == "sft" else self.SFT_ONLY
        body = {
            name: self.cleaned_data[name]
            for name in self.PARAM_FIELDS
            if name not in skip and self.cleaned_data.get(name) is not None
        }
        return body


class DatasetRegisterForm(forms.Form):
    name = forms.CharField(max_length=200)
    type = forms.ChoiceField(choices=[(Dataset.CONVERSATIONS, "Conversations (SFT)"),
                                      (Dataset.PREFERENCES, "Preferences (DPO)")])
    allow_rag = forms.BooleanField(required=False, label="Allow use for RAG")
    allow_private_training = forms.BooleanField(required=False, initial=True,
                                                label="Allow private training")


class DatasetUploadForm(forms.Form):
    file = forms.FileField(label="JSONL file",
                           help_text="One JSON object per line: {\"messages\": [...]} for "
                                     "conversations, {\"prompt\",\"chosen\",\"rejected\"} for "
                                     "preferences.")
    skip_invalid = forms.BooleanField(required=False, label="Store the valid lines and skip "
                                                            "the invalid ones")


class ApiKeyForm(forms.Form):
    name = forms.CharField(max_length=100, required=False)
    access = forms.ChoiceField(choices=ApiKey.ACCESS_CHOICES, initial=ApiKey.READ_WRITE)


class AutoTrainingForm(forms.Form):
    enabled = forms.BooleanField(required=False, label="Train automatically when enough new "
                                                       "feedback has arrived")
    method = forms.ChoiceField(choices=METHOD_CHOICES)
    min_new_feedback = forms.IntegerField(min_value=1, max_value=1_000_000,
                                          label="New feedback needed to start a job")
