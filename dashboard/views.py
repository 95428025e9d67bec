"""The tenant dashboard (`/t/<slug>/...`) and the staff dashboard (`/staff/`).

Views stay thin: `TenantMemberMixin` resolves the tenant and the role (404 for non-members, 403
for viewers on POST), a view calls one service or selector of the apps, and renders. Charts are
drawn in the browser by Plotly from the JSON endpoints at the end of each section, which are
scoped exactly like the pages.
"""

from __future__ import annotations

from django.conf import settings as django_settings
from django.contrib import messages
from django.contrib.auth.mixins import LoginRequiredMixin
from django.http import Http404, HttpResponseRedirect, JsonResponse
from django.shortcuts import redirect
from django.urls import reverse
from django.utils.decorators import method_decorator
from django.views import View
from django.views.decorators.cache import never_cache
from django.views.generic import TemplateView

from adapters.models import AdapterVersion
from adapters.selectors import (
    adapter_version_current,
    adapter_version_get,
    adapter_version_list,
    adapter_version_of_job,
    adapter_versions_current_by_tenant,
)
from dashboard import charts
from dashboard.forms import (
    ApiKeyForm,
    AutoTrainingForm,
    BaseModelForm,
    DatasetRegisterForm,
    DatasetUploadForm,
    TrainingJobForm,
    form_defaults,
)
from dashboard.permissions import (
    StaffRequiredMixin,
    TenantMemberMixin,
    tenant_accesses_for_user,
)
from feedback.selectors import dataset_get, dataset_list
from tenants.errors import DomainError, InvalidInput, NotFound
from tenants.models import Tenant
from tenants.selectors import api_key_get, api_key_list, tenant_list, tenant_settings_document
from tenants.services import (
    api_key_create,
    api_key_revoke,
    audit_actor_from_request,
    audit_log_record,
    tenant_settings_change,
)
from training.models import TrainingJob
from training.parameters import training_params_errors
from training.selectors import (
    tenants_with_job_counts,
    training_defaults_get,
    training_job_get,
    training_job_get_any,
    training_job_list,
    training_jobs_by_ids,
    training_jobs_recent,
    training_jobs_with_loss,
)
from training.trainer.config import PRESETS

# Services refuse with domain errors only (tenants.errors); the views show them on the page.


def found_or_404(selector, **kwargs):
    """A selector's object; its "not found" as the page's 404."""
    try:
        return selector(**kwargs)
    except NotFound as exc:
        raise Http404 from exc


def is_field_errors(exc: DomainError) -> bool:
    """A refusal that carries per-field reasons (`{field: [messages]}`) in its details."""
    return exc.code == "validation_error"


def detail_lines(details) -> list[str]:
    """Per-field reasons as "field: message" lines (nested objects as "field: inner: ...")."""
    lines: list[str] = []

    def walk(prefix: str, value) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                walk(f"{prefix}{key}: ", inner)
        elif isinstance(value, list | tuple):
            for inner in value:
                walk(prefix, inner)
        elif value not in (None, ""):
            lines.append(f"{prefix}{value}")

    walk("", details)
    return lines


def error_lines(exc: DomainError) -> list[str]:
    """A service's refusal as lines for a page: the per-field reasons of a validation error;
    otherwise the message and any per-field reasons (not the numbers behind the message)."""
    details = exc.details
    if is_field_errors(exc):
        return detail_lines(details) or [exc.message or "The request was refused."]
    if isinstance(details, dict):
        details = {k: v for k, v in details.items() if isinstance(v, list)}
    lines = [exc.message] if exc.message else []
    return lines + detail_lines(details) or ["The request was refused."]


def settings_document(tenant: Tenant) -> dict:
    return tenant_settings_document(tenant=tenant)


def settings_change(request, *, tenant: Tenant, changes: dict) -> dict:
    """Store a settings change through the API's own service (same rules, same audit entry)."""
    actor, ip = audit_actor_from_request(request)
    return tenant_settings_change(tenant=tenant, changes=changes, actor=actor, ip_address=ip,
                                  via="dashboard")


# --- Home ----------------------------------------------------------------------------------


class HomeView(LoginRequiredMixin, TemplateView):
    """The tenants a user is a member of; a single membership goes straight to its overview."""

    template_name = "dashboard/home.html"

    def get(self, request, *args, **kwargs):
        accesses = tenant_accesses_for_user(request.user)
        if len(accesses) == 1 and not request.user.is_staff:
            return redirect("dashboard:overview", accesses[0].tenant.slug)
        return self.render_to_response({"accesses": accesses})


# --- Overview ------------------------------------------------------------------------------


class TenantPage(TenantMemberMixin, TemplateView):
    nav = ""

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        context["nav"] = self.nav
        return context


def feedback_stats_for(tenant: Tenant) -> dict:
    from feedback.selectors import feedback_stats

    return feedback_stats(tenant=tenant)


class OverviewView(TenantPage):
    template_name = "dashboard/overview.html"
    nav = "overview"

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        stats = feedback_stats_for(self.tenant)
        context["stats"] = stats
        context["readiness"] = readiness_bars(stats)
        context["pii_rows"] = pii_rows(stats)
        context["pii_total"] = (stats.get("pii_redactions") or {}).get("total", 0)
        context["jobs"] = training_job_list(tenant=self.tenant)[:5]
        context["active_version"] = adapter_version_current(tenant=self.tenant)
        context["ab"] = settings_document(self.tenant)["lora_ab_test"]
        return context


def readiness_bars(stats: dict) -> list[dict]:
    """Progress toward the SFT and DPO thresholds, as the feedback selector reports them."""
    readiness = stats.get("readiness") or {}
    bars = []
    for key, count_key, label in (("sft", "corrections", "SFT: corrections"),
                                  ("dpo", "thumbs", "DPO: thumbs up + down")):
        item = readiness.get(key) or {}
        have = int(item.get(count_key, 0))
        need = int(item.get("required", 0)) or 1
        bars.append({
            "key": key, "label": label, "have": have, "need": need,
            "percent": min(100, round(100 * have / need)),
            "ready": bool(item.get("ready")),
            "text": f"{have} / {need}",
        })
    return bars


def pii_rows(stats: dict) -> list[dict]:
    """PII redaction counts per kind, in feedback corrections and in logged messages."""
    pii = stats.get("pii_redactions") or {}
    feedback, messages_ = pii.get("feedback") or {}, pii.get("messages") or {}
    return [
        {"kind": kind, "feedback": feedback.get(kind, 0), "messages": messages_.get(kind, 0)}
        for kind in sorted(set(feedback) | set(messages_))
    ]


class OverviewDataView(TenantMemberMixin, View):
    """Chart data of the overview: feedback per day by type, and the A/B split."""

    def get(self, request, slug):
        document = settings_document(self.tenant)
        active = adapter_version_current(tenant=self.tenant)
        return JsonResponse({
            "feedback": charts.feedback_over_time(tenant=self.tenant),
            "ab_test": document["lora_ab_test"],
            "active_version": active.number if active else None,
        })


# --- Datasets ------------------------------------------------------------------------------


class DatasetListView(TenantPage):
    template_name = "dashboard/datasets.html"
    nav = "datasets"

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        context["datasets"] = dataset_list(tenant=self.tenant)
        context.setdefault("form", DatasetRegisterForm())
        return context

    def post(self, request, slug):
        from feedback.services import dataset_register

        form = DatasetRegisterForm(request.POST)
        if form.is_valid():
            try:
                dataset, created = dataset_register(
                    tenant=self.tenant,
                    name=form.cleaned_data["name"],
                    type=form.cleaned_data["type"],
                    allow_rag=form.cleaned_data["allow_rag"],
                    allow_private_training=form.cleaned_data["allow_private_training"],
                )
            except DomainError as exc:
                for line in error_lines(exc):
                    form.add_error(None, line)
            else:
                messages.success(request, f"Dataset “{dataset.name}” registered." if created
                                 else f"Dataset “{dataset.name}” was already registered.")
                return redirect("dashboard:dataset", self.tenant.slug, dataset.pk)
        return self.render_to_response(self.get_context_data(form=form), status=400)


def report_rows(report: dict) -> list[dict]:
    """An upload report's refused records as one row per problem, by line number."""
    rows = []
    for record in (report or {}).get("invalid_records") or []:
        for error in record.get("errors") or []:
            field = error.get("field") or ""
            prefix = f"line {record.get('line')}"
            if field.startswith(prefix):
                field = field[len(prefix):].lstrip(": ")
            rows.append({"line": record.get("line", record.get("index")), "field": field,
                         "message": error.get("message", "")})
    return rows


class DatasetDetailView(TenantPage):
    template_name = "dashboard/dataset.html"
    nav = "datasets"

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        dataset = found_or_404(dataset_get, tenant=self.tenant,
                               dataset_id=self.kwargs["dataset_id"])
        context["dataset"] = dataset
        report = dataset.last_validation_report or {}
        context["report"] = report
        context["report_rows"] = report_rows(report)
        context.setdefault("form", DatasetUploadForm())
        return context

    def post(self, request, slug, dataset_id):
        from feedback.services import dataset_upload, upload_items_from_jsonl
        from feedback.validation import jsonl_lines

        dataset = found_or_404(dataset_get, tenant=self.tenant, dataset_id=dataset_id)
        form = DatasetUploadForm(request.POST, request.FILES)
        status = 400
        if form.is_valid():
            upload = form.cleaned_data["file"]
            try:
                report = dataset_upload(
                    tenant=self.tenant, dataset=dataset,
                    items=upload_items_from_jsonl(jsonl_lines(upload)),
                    skip_invalid=form.cleaned_data["skip_invalid"], source="jsonl",
                    filename=upload.name,
                )
            except DomainError as exc:
                # A refused upload stores its report on the dataset; other refusals (empty
                # file) go on the form.
                if exc.code != "invalid_records":
                    for line in error_lines(exc):
                        form.add_error(None, line)
            else:
                status = 200
                messages.success(request, f"{report.get('stored', 0)} records stored, "
                                 f"{report.get('duplicates', 0)} duplicates, "
                                 f"{report.get('skipped', 0)} invalid lines skipped.")
        context = self.get_context_data(form=form)
        return self.render_to_response(context, status=status)


# --- Training ------------------------------------------------------------------------------


def training_start(request, *, tenant: Tenant, form: TrainingJobForm, dry_run: bool):
    """Dry-run or create a job through the training service; returns (job or None, estimate)."""
    from training.services import JobRequest, training_job_create

    actor, ip = audit_actor_from_request(request)
    job_request = JobRequest(method=form.cleaned_data["method"], params=form.params(),
                             preset=form.cleaned_data.get("preset") or "",
                             dry_run=dry_run, triggered_by="dashboard")
    return training_job_create(tenant=tenant, request=job_request, actor=actor, ip_address=ip)


def training_params_refusals(form: TrainingJobForm) -> list[str]:
    """The form's values the train endpoints would refuse, as "name: reason" lines.

    The bounds come from the parameter schema the API's serializers are built from, so browser
    and API accept the same values and refuse the others with the same words.
    """
    errors = training_params_errors(method=form.cleaned_data["method"], params=form.params())
    return [f"{name}: {message}" for name, messages_ in errors.items() for message in messages_]


class TrainingListView(TenantPage):
    template_name = "dashboard/training.html"
    nav = "training"

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        context["jobs"] = training_job_list(tenant=self.tenant)[:50]
        # The defaults this tenant's jobs get (its base's recipe over the seed's): the form
        # states every number it shows, so it must show those.
        defaults = form_defaults(training_defaults_get(tenant=self.tenant))
        context.setdefault("form", TrainingJobForm(initial={"method": "sft", **defaults["sft"]}))
        context["method_defaults"] = defaults
        context["presets"] = PRESETS
        return context

    def post(self, request, slug):
        form = TrainingJobForm(request.POST)
        if not form.is_valid():
            return self.render_to_response(self.get_context_data(form=form), status=400)
        refusals = training_params_refusals(form)
        if refusals:
            for line in refusals:
                form.add_error(None, line)
            return self.render_to_response(self.get_context_data(form=form), status=400)
        confirmed = request.POST.get("confirm") == "1"
        try:
            job, estimate = training_start(request, tenant=self.tenant, form=form,
                                           dry_run=not confirmed)
        except DomainError as exc:
            for line in error_lines(exc):
                form.add_error(None, line)
            return self.render_to_response(self.get_context_data(form=form), status=400)
        if not confirmed:
            context = self.get_context_data(form=form)
            context["estimate"] = estimate
            context["confirm_params"] = {**form.params(),
                                         "preset": form.cleaned_data.get("preset") or ""}
            return self.render_to_response(context)
        messages.success(request, f"Training job {job.id} queued.")
        return redirect("dashboard:job", self.tenant.slug, job.id)


class JobDetailView(TenantPage):
    template_name = "dashboard/job.html"
    nav = "training"

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        job = training_job_get(tenant=self.tenant, job_id=self.kwargs["job_id"])
        context["job"] = job
        context["summary"] = charts.job_summary(job)
        context["percent"] = round(100 * float(job.progress or 0))
        context["events"] = charts.job_events(job=job)
        context["version"] = adapter_version_of_job(job=job)
        # How often the page asks for news while the job runs (the issue: every ~1-2 s).
        context["poll_ms"] = int(getattr(django_settings, "DASHBOARD_JOB_POLL_MS", 1500))
        return context


@method_decorator(never_cache, name="dispatch")
class JobDataView(TenantMemberMixin, View):
    """What the job page polls: status, progress, curves and events (JSON)."""

    def get(self, request, slug, job_id):
        job = training_job_get(tenant=self.tenant, job_id=job_id)
        return JsonResponse(charts.job_live_data(job=job))


class JobCancelView(TenantMemberMixin, View):
    def post(self, request, slug, job_id):
        from training.services import training_job_cancel

        job = training_job_get(tenant=self.tenant, job_id=job_id)
        actor, ip = audit_actor_from_request(request)
        try:
            job = training_job_cancel(job=job, actor=actor, ip_address=ip)
        except DomainError as exc:
            for line in error_lines(exc):
                messages.error(request, line)
        else:
            messages.success(request, f"Job {job.id}: cancelled by user."
                             if job.status == TrainingJob.CANCELLED
                             else f"Cancellation of {job.id} requested.")
        return redirect("dashboard:job", self.tenant.slug, job.id)


# --- Adapters ------------------------------------------------------------------------------


def version_metrics(tenant: Tenant) -> dict:
    """Per-version feedback metrics with 95% intervals, the A/B comparison, the auto-rollback
    check and the latest automatic decisions with their numbers (adapters app)."""
    from adapters.metrics import (
        ab_test_comparison,
        online_decisions_recent,
        rollback_check,
        versions_online_metrics,
    )
    from adapters.selectors import adapter_settings_get

    comparison = ab_test_comparison(tenant=tenant)
    comparison.pop("arms", None)  # the per-version rows below carry the same metrics
    return {"versions": versions_online_metrics(tenant=tenant), "ab_test": comparison,
            "rollback": rollback_check(tenant=tenant),
            "auto_rollback": adapter_settings_get(tenant=tenant).auto_rollback,
            "decisions": online_decisions_recent(tenant=tenant)}


class AdapterListView(TenantPage):
    template_name = "dashboard/adapters.html"
    nav = "adapters"

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        versions = list(adapter_version_list(tenant=self.tenant))
        active = next((v for v in versions if v.is_active), None)
        context["versions"] = versions
        context["active"] = active
        ab = settings_document(self.tenant)["lora_ab_test"]
        context["ab"] = ab
        weights = kwargs.get("ab_weights") or ab.get("versions") or {}
        context["ab_rows"] = [
            {"version": v.version, "weight": weights.get(v.version, ""),
             "active": v.is_active}
            for v in versions if v.status == AdapterVersion.READY
        ]
        context["ab_enabled"] = kwargs.get("ab_enabled", ab.get("enabled"))
        context["metrics"] = version_metrics(self.tenant)
        return context


GATE_CODES = ("eval_regression", "golden_regression", "general_knowledge_lost")
EVALUATION_SETS = (("golden", "Golden set (held out, never trained)"),
                   ("trained", "Trained prompts"),
                   ("general", "General questions the base answered right"),
                   ("safety", "Reported prompts: reported answer repeated"))


def _cell(entry: dict | None, items: int, key: str, right: str) -> str:
    if not entry or entry.get(key) is None:
        return "–"
    return f"{entry[right]}/{items} ({entry[key]:.0%})"


def evaluation_rows(evaluation: dict) -> list[dict]:
    """The evaluation's score table: one row per set, a cell per model (new, active, base)."""
    scores = evaluation.get("scores") or {}
    rows = []
    for name, label in EVALUATION_SETS:
        entry = scores.get(name) or {}
        if name == "general":
            items = entry.get("base_right") or 0
            cells = {m: _cell(entry.get(m), items, "kept_share", "kept")
                     for m in ("new", "active")}
            cells["base"] = f"{items}/{entry.get('items', 0)}" if entry else "–"
            near = (entry.get("new") or {}).get("lost_near_ties")
            if near:
                cells["new"] += f"; lost near ties of the base: {near}"
        elif name == "safety":
            items = entry.get("items") or 0
            cells = {m: _cell(entry.get(m), items, "share", "repeats_reported")
                     for m in ("new", "active", "base")}
        else:
            items = entry.get("items") or 0
            cells = {m: _cell(entry.get(m), items, "share", "right")
                     for m in ("new", "active", "base")}
        reached = ((scores.get("scope") or {}).get("new") or {}).get(name)
        if reached is not None and cells["new"] != "–":
            # A version with a scope: how many of the set's items its adapter answered (the
            # base answered the rest, as chat serves it).
            cells["new"] += f"; {reached} of {entry.get('items', 0)} within its scope"
        rows.append({"label": label, "items": items, **cells})
    return rows


class AdapterActivateView(TenantPage):
    """GET: the confirmation page. POST: activate (rollback = activating an older version)."""

    template_name = "dashboard/adapter_activate.html"
    nav = "adapters"

    def get_context_data(self, **kwargs):
        from adapters.selectors import adapter_version_evaluation
        from adapters.services.evaluation import NEAR_TIE_NATS

        context = super().get_context_data(**kwargs)
        context["version"] = self.version
        context["active"] = adapter_version_current(tenant=self.tenant)
        evaluation = adapter_version_evaluation(version=self.version)
        context["evaluation"] = evaluation
        context["evaluation_rows"] = evaluation_rows(evaluation)
        context["general_regressions"] = [r for r in evaluation.get("regressions") or []
                                          if r.get("set") == "general"]
        context["near_tie_nats"] = NEAR_TIE_NATS
        return context

    def get(self, request, slug, number):
        self.version = found_or_404(adapter_version_get, tenant=self.tenant, label=f"v{number}")
        return self.render_to_response(self.get_context_data())

    def post(self, request, slug, number):
        from adapters.services import adapter_version_activate

        self.version = found_or_404(adapter_version_get, tenant=self.tenant, label=f"v{number}")
        actor, ip = audit_actor_from_request(request)
        try:
            adapter_version_activate(version=self.version, force=request.POST.get("force") == "1",
                                     actor=actor, ip_address=ip, reason="dashboard")
        except DomainError as exc:
            context = self.get_context_data()
            context["errors"] = error_lines(exc)
            context["can_force"] = exc.code in GATE_CODES
            return self.render_to_response(context, status=409)
        messages.success(request, f"{self.version.version} is now the active version.")
        return redirect("dashboard:adapters", self.tenant.slug)


class AbTestUpdateView(TenantMemberMixin, View):
    """Save the A/B split; the adapters app's validator refuses bad splits (sum, versions)."""

    def post(self, request, slug):
        enabled = request.POST.get("enabled") == "on"
        weights: dict[str, float] = {}
        raw: dict[str, str] = {}
        bad: list[str] = []
        for key, value in request.POST.items():
            if not key.startswith("weight_") or value.strip() == "":
                continue
            label = key.removeprefix("weight_")
            raw[label] = value
            try:
                number = float(value)
            except ValueError:
                bad.append(f"{label}: “{value}” is not a number.")
                continue
            if number != 0:
                weights[label] = number
        try:
            if bad:
                raise InvalidInput("validation_error", "The request has invalid fields.",
                                   details={"versions": bad})
            settings_change(request, tenant=self.tenant, changes={
                "lora_ab_test": {"enabled": enabled, "versions": weights}})
        except DomainError as exc:
            view = AdapterListView()
            view.setup(request, slug=slug)
            view.access, view.tenant = self.access, self.tenant
            context = view.get_context_data(ab_weights=raw, ab_enabled=enabled)
            split = exc.details.get("lora_ab_test") if is_field_errors(exc) else None
            context["ab_errors"] = (detail_lines(split) if split
                                    else error_lines(exc)) or ["The request was refused."]
            response = view.render_to_response(context, status=400)
            return response
        messages.success(request, "A/B split saved." if enabled else "A/B split saved (off).")
        return HttpResponseRedirect(reverse("dashboard:adapters", args=[self.tenant.slug])
                                    + "#ab-test")


class AdapterDataView(TenantMemberMixin, View):
    """Chart data of the adapters page: the A/B split and per-version metrics with CIs."""

    def get(self, request, slug):
        versions = list(adapter_version_list(tenant=self.tenant))[::-1]  # oldest first
        return JsonResponse({
            "ab_test": settings_document(self.tenant)["lora_ab_test"],
            "versions": [
                {"version": v.version, "is_active": v.is_active, "status": v.status,
                 "parent": v.parent.version if v.parent_id else None,
                 "eval_metrics": v.eval_metrics}
                for v in versions
            ],
            "metrics": version_metrics(self.tenant),
        })


# --- API keys and settings -----------------------------------------------------------------


@method_decorator(never_cache, name="dispatch")
class ApiKeyListView(TenantPage):
    template_name = "dashboard/api_keys.html"
    nav = "api_keys"

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        context["keys"] = api_key_list(tenant=self.tenant)
        context.setdefault("form", ApiKeyForm())
        return context

    def post(self, request, slug):
        form = ApiKeyForm(request.POST)
        if not form.is_valid():
            return self.render_to_response(self.get_context_data(form=form), status=400)
        key, secret = api_key_create(tenant=self.tenant, name=form.cleaned_data["name"],
                                     access=form.cleaned_data["access"], created_by=request.user)
        actor, ip = audit_actor_from_request(request)
        audit_log_record(action="api_key.created", actor=actor, ip_address=ip,
                         tenant=self.tenant, target=key.prefix, details={"via": "dashboard"})
        # The secret is rendered in this response only (never stored, never in a redirect URL).
        context = self.get_context_data(form=ApiKeyForm())
        context["new_key"], context["new_secret"] = key, secret
        return self.render_to_response(context, status=201)


class ApiKeyRevokeView(TenantMemberMixin, View):
    def post(self, request, slug, key_id):
        key = api_key_get(tenant=self.tenant, key_id=key_id)
        if key is None:
            raise Http404
        api_key_revoke(key=key)
        actor, ip = audit_actor_from_request(request)
        audit_log_record(action="api_key.revoked", actor=actor, ip_address=ip,
                         tenant=self.tenant, target=key.prefix, details={"via": "dashboard"})
        messages.success(request, f"Key {key.prefix}… revoked.")
        return redirect("dashboard:api_keys", self.tenant.slug)


class SettingsView(TenantPage):
    template_name = "dashboard/settings.html"
    nav = "settings"

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        document = settings_document(self.tenant)
        context.setdefault("form", AutoTrainingForm(initial=document["auto_training"]))
        context.setdefault("base_form", BaseModelForm(
            initial={"base_model": document["base_model"] or ""}))
        context["document"] = document
        context["default_base_model"] = getattr(django_settings, "DEFAULT_BASE_MODEL", "")
        return context

    def post(self, request, slug):
        if request.POST.get("section") == "base_model":
            return self.post_base_model(request)
        form = AutoTrainingForm(request.POST)
        if form.is_valid():
            try:
                settings_change(request, tenant=self.tenant,
                                changes={"auto_training": form.cleaned_data})
            except DomainError as exc:
                for line in error_lines(exc):
                    form.add_error(None, line)
            else:
                state = "on" if form.cleaned_data["enabled"] else "off"
                messages.success(request, f"Automatic training is {state}.")
                return redirect("dashboard:settings", self.tenant.slug)
        return self.render_to_response(self.get_context_data(form=form), status=400)

    def post_base_model(self, request):
        """Change the tenant's base model through the same settings service as the API."""
        form = BaseModelForm(request.POST)
        if form.is_valid():
            name = form.cleaned_data["base_model"] or None
            try:
                settings_change(request, tenant=self.tenant, changes={"base_model": name})
            except DomainError as exc:
                for line in error_lines(exc):
                    form.add_error(None, line)
            else:
                messages.success(request, f"New jobs train on {name}." if name else
                                 "New jobs train on the platform's default base model.")
                return redirect("dashboard:settings", self.tenant.slug)
        return self.render_to_response(self.get_context_data(base_form=form), status=400)


# --- Staff ---------------------------------------------------------------------------------


def recent_jobs_for_comparison(request) -> list[TrainingJob]:
    """The jobs to overlay: `?jobs=id,id` when given, else the 5 newest that logged a loss."""
    wanted = request.GET.getlist("job") + request.GET.get("jobs", "").split(",")
    wanted = list(dict.fromkeys(j for j in wanted if j))[:10]
    if wanted:
        return training_jobs_by_ids(job_ids=wanted)
    return training_jobs_with_loss(limit=5)


class StaffDashboardView(StaffRequiredMixin, TemplateView):
    template_name = "dashboard/staff/index.html"

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        active = adapter_versions_current_by_tenant()
        context["tenants"] = [
            {"tenant": t, "active": active.get(t.pk),
             "ab": settings_document(t)["lora_ab_test"]}
            for t in tenants_with_job_counts()
        ]
        context["queues"] = charts.queue_health()
        context["by_backend"] = charts.running_jobs_by_backend()
        context["failures"] = training_jobs_recent(limit=20, status=TrainingJob.FAILED)
        context["recent_jobs"] = training_jobs_recent(limit=30)
        compared = recent_jobs_for_comparison(self.request)
        context["compared_ids"] = [j.id for j in compared]
        context["comparison"] = charts.jobs_comparison(jobs=compared)
        return context


class StaffDataView(StaffRequiredMixin, View):
    """Staff chart data: loss curves to overlay, GPU-hours by tenant and month, A/B splits."""

    def get(self, request):
        jobs = recent_jobs_for_comparison(request)
        splits = []
        for tenant in tenant_list():
            ab = settings_document(tenant)["lora_ab_test"]
            entry = {"tenant": tenant.slug, "enabled": ab["enabled"], "versions": ab["versions"]}
            entry["metrics"] = version_metrics(tenant)
            splits.append(entry)
        return JsonResponse({
            "comparison": charts.jobs_comparison(jobs=jobs),
            "gpu_hours": charts.gpu_hours_by_tenant_month(),
            "ab_tests": splits,
            "queues": charts.queue_health(),
        })


@method_decorator(never_cache, name="dispatch")
class StaffJobCurveView(StaffRequiredMixin, View):
    """One job's curves for the admin's job change page (operators only)."""

    def get(self, request, job_id):
        job = training_job_get_any(job_id=job_id)
        return JsonResponse(charts.job_live_data(job=job))
