"""Dashboard forms. They coerce browser input into types; the rules behind the values (ranges the
API accepts, readiness, quotas, A/B sums) are applied by the apps' services and serializers, and
their refusals are shown back on these forms."""

from django import forms
from django.conf import settings

from feedback.models import Dataset
from tenants.models import ApiKey
from training.parameters import METHODS, PARAMETERS
from training.trainer.config import PRESETS

METHOD_CHOICES = [("sft", "SFT: supervised fine-tuning"), ("dpo", "DPO: preference optimisation"),
                  ("kto", "KTO: thumbs and ratings, no pairs needed")]
# The parameters the form shows, in the schema's order (training.parameters).
FORM_PARAMETERS = [p for p in PARAMETERS if p.in_form]
FORM_FIELD_CLASSES = {"int": forms.IntegerField, "float": forms.FloatField}


def form_defaults(defaults: dict[str, dict]) -> dict[str, dict]:
    """The form's numbers per method (its initial values and its method switch, JS) out of the
    defaults a job would get (training.selectors.training_defaults_get)."""
    return {method: {p.name: values[p.name] for p in FORM_PARAMETERS
                     if method in p.methods and p.name in values}
            for method, values in defaults.items()}


def preset_choices() -> list[tuple[str, str]]:
    return [("", "None (method defaults)")] + [
        (name, name.replace("_", " ").capitalize()) for name in PRESETS
    ]


class TrainingJobForm(forms.Form):
    """Start an SFT, DPO or KTO job. Blank numbers fall back to the preset, then the seed's
    defaults.

    The parameter fields are built from the schema and only coerce types; the bounds are checked
    by `training.parameters.training_params_errors`, so a refusal reads as the API's.
    """

    method = forms.ChoiceField(choices=METHOD_CHOICES, initial="sft")
    preset = forms.ChoiceField(choices=preset_choices, required=False)

    PARAM_FIELDS = [p.name for p in FORM_PARAMETERS]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for parameter in FORM_PARAMETERS:
            options = {"required": False, "help_text": parameter.help_text}
            if parameter.label:
                options["label"] = parameter.label
            self.fields[parameter.name] = FORM_FIELD_CLASSES[parameter.kind](**options)
            if parameter.methods != METHODS:  # the method switch (JS) shows it for these only
                self.fields[parameter.name].widget.attrs["data-only"] = " ".join(
                    parameter.methods)

    def params(self) -> dict:
        """The train endpoints' parameters for this method (the preset travels separately)."""
        method = self.cleaned_data["method"]
        body = {
            p.name: self.cleaned_data[p.name]
            for p in FORM_PARAMETERS
            if method in p.methods and self.cleaned_data.get(p.name) is not None
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


class BaseModelForm(forms.Form):
    """The tenant's base model (training setting `base_model`): a name from the operator's
    BASE_MODELS, or blank for the platform's default. The select offers the configured names;
    the training app's settings service checks the value and names the choices on a refusal."""

    base_model = forms.CharField(required=False, label="Base model",
                                 help_text="New jobs train on this base; versions keep the "
                                           "base they were trained on.")

    def __init__(self, *args, **kwargs):
        from training.services.settings import base_model_choices

        super().__init__(*args, **kwargs)
        default = getattr(settings, "DEFAULT_BASE_MODEL", "")
        self.fields["base_model"].widget = forms.Select(choices=[
            ("", f"Platform default ({default})"),
            *[(name, name) for name in base_model_choices()],
        ])
