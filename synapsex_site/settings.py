"""SynapseX Training settings: one module, driven by environment variables.

Embedded defaults (nothing set): SQLite under var/, local media files, a generated secret key in
var/, a local-memory cache. With DATABASE_URL, REDIS_URL, S3_BUCKET and friends set, the same code
runs on PostgreSQL, Redis and S3-compatible storage.
"""

import secrets
import sys
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from synapsex_site.env import (
    env_bool,
    env_choice,
    env_float,
    env_int,
    env_list,
    env_mapping,
    env_str,
)

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("SYNAPSEX_VAR_DIR", str(BASE_DIR / "var")))
VAR_DIR.mkdir(parents=True, exist_ok=True)

DEBUG = env_bool("DEBUG", False)
# Local runs (the README's first command) and the test suite use generated local secrets.
EMBEDDED = env_bool("SYNAPSEX_EMBEDDED", False) or "pytest" in sys.modules


def _secret_key() -> str:
    key = env_str("SECRET_KEY")
    if key:
        return key
    if not DEBUG and not EMBEDDED:
        raise ImproperlyConfigured(
            "SECRET_KEY is required unless DEBUG=true or SYNAPSEX_EMBEDDED=true (local runs)."
        )
    # Local runs keep one generated key so that API key hashes stay valid across restarts.
    key_file = VAR_DIR / "secret_key"
    if not key_file.exists():
        key_file.write_text(secrets.token_urlsafe(50))
        key_file.chmod(0o600)
    return key_file.read_text().strip()


SECRET_KEY = _secret_key()
# API keys are stored as HMAC-SHA256(API_KEY_PEPPER, secret): a leaked table is useless alone.
API_KEY_PEPPER = env_str("API_KEY_PEPPER") or SECRET_KEY

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "django_rq",
    "tenants",
    "feedback",
    "training",
    "adapters",
    "dashboard",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Body size, JSON depth and NUL refusals before anything reads the body; extra headers.
    "synapsex_site.middleware.RequestHardeningMiddleware",
    "synapsex_site.middleware.SecurityHeadersMiddleware",
    # A database that is down or a cut connection: 503 with Retry-After, not a 500.
    "synapsex_site.middleware.DatabaseUnavailableMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "synapsex_site.urls"
WSGI_APPLICATION = "synapsex_site.wsgi.application"
ASGI_APPLICATION = "synapsex_site.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": dj_database_url.parse(
        env_str("DATABASE_URL", f"sqlite:///{VAR_DIR / 'synapsex.sqlite3'}"),
        conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 0, minimum=0),
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Concurrent web + worker processes on one SQLite file: wait for the write lock.
    DATABASES["default"].setdefault("OPTIONS", {})["timeout"] = 30

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env_str("REDIS_URL")
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "synapsex_site.cache.RedisCache",  # one client per pool, see there
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": "synapsex",
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

RQ_QUEUES = {
    "training": {
        "URL": REDIS_URL or "redis://127.0.0.1:6379/0",
        "DEFAULT_TIMEOUT": env_int("TRAINING_JOB_TIMEOUT", 6 * 3600, minimum=60),
    },
    "default": {"URL": REDIS_URL or "redis://127.0.0.1:6379/0", "DEFAULT_TIMEOUT": 600},
}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = VAR_DIR / "staticfiles"
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
# Serve static files straight from static/ too, so a run without collectstatic works.
WHITENOISE_USE_FINDERS = True
MEDIA_ROOT = Path(env_str("MEDIA_ROOT", str(VAR_DIR / "media")))
MEDIA_URL = "media/"
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "dashboard:home"
LOGOUT_REDIRECT_URL = "login"

# Object storage: adapters and data snapshots. Local files unless an S3 bucket is configured.
S3_BUCKET = env_str("S3_BUCKET")
if S3_BUCKET:
    _default_storage = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": S3_BUCKET,
            "endpoint_url": env_str("S3_ENDPOINT_URL"),
            "region_name": env_str("S3_REGION", "us-east-1"),
            "access_key": env_str("S3_ACCESS_KEY_ID"),
            "secret_key": env_str("S3_SECRET_ACCESS_KEY"),
            "location": env_str("S3_PREFIX", ""),
            "file_overwrite": False,
            "default_acl": None,
            "querystring_auth": True,
        },
    }
else:
    _default_storage = {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": str(MEDIA_ROOT)},
    }
STORAGES = {
    "default": _default_storage,
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}

# Uploads: bodies above these limits are refused before they are read into memory.
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("MAX_REQUEST_BYTES", 10 * 1024 * 1024, minimum=1024)
FILE_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024
MAX_UPLOAD_FILE_BYTES = env_int("MAX_UPLOAD_FILE_BYTES", 200 * 1024 * 1024, minimum=1024)

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["tenants.authentication.ApiKeyAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["tenants.permissions.HasTenantApiKey"],
    "DEFAULT_RENDERER_CLASSES": [
        "rest_framework.renderers.JSONRenderer",
        "rest_framework.renderers.BrowsableAPIRenderer",
    ],
    "DEFAULT_PARSER_CLASSES": [
        "rest_framework.parsers.JSONParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "DEFAULT_PAGINATION_CLASS": "tenants.api.pagination.StandardPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_THROTTLE_CLASSES": ["tenants.throttling.ApiKeyRateThrottle"],
    "DEFAULT_THROTTLE_RATES": {"api_key": env_str("API_RATE_LIMIT", "6000/min")},
    "EXCEPTION_HANDLER": "tenants.api.errors.api_exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "UNAUTHENTICATED_USER": None,
}

SPECTACULAR_SETTINGS = {
    "TITLE": "SynapseX Training API",
    "DESCRIPTION": "Collect feedback, compile training data, train LoRA adapters (SFT, DPO), "
    "and serve them per tenant.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "SERVE_AUTHENTICATION": [],
    # The Bearer key and the error envelope on every operation (synapsex_site/openapi.py).
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "synapsex_site.openapi.error_responses_postprocess",
    ],
}

# --- Training -------------------------------------------------------------------------------
# The base models on offer, name -> local folder (BASE_MODELS="name=/path;other=/path"). Embedded:
# SmolLM2-135M-Instruct, converted offline by `python manage.py build_real_base` (scripts/setup.sh
# runs it), and the tiny Llama-shaped model of `build_tiny_base` (fast unit tests).
EMBEDDED_BASE_MODELS = {
    "smollm2-135m-instruct": str(VAR_DIR / "models" / "smollm2-135m-instruct"),
    "tiny-base": str(VAR_DIR / "models" / "tiny-base"),
}
BASE_MODELS = env_mapping("BASE_MODELS", EMBEDDED_BASE_MODELS)
DEFAULT_BASE_MODEL = env_str("DEFAULT_BASE_MODEL", next(iter(BASE_MODELS)))
if DEFAULT_BASE_MODEL not in BASE_MODELS:
    raise ImproperlyConfigured(f"DEFAULT_BASE_MODEL={DEFAULT_BASE_MODEL!r} is not one of "
                               f"BASE_MODELS ({sorted(BASE_MODELS)})")
# The default base's folder; BASE_MODEL_PATH set in the environment replaces the default entry's.
BASE_MODEL_PATH = env_str("BASE_MODEL_PATH") or BASE_MODELS[DEFAULT_BASE_MODEL]
BASE_MODELS[DEFAULT_BASE_MODEL] = BASE_MODEL_PATH
# Which defaults a base's jobs get for what a request leaves out (name -> recipe of
# training.services.recipes): small bases need other defaults than the seed's (README).
BASE_MODEL_RECIPES = env_mapping("BASE_MODEL_RECIPES", {"smollm2-135m-instruct": "small_base"})
BASE_MODEL_HF_ID = env_str("BASE_MODEL_HF_ID")
BASE_MODEL_REVISION = env_str("BASE_MODEL_REVISION")
TRAINING_WORK_DIR = Path(env_str("TRAINING_WORK_DIR", str(VAR_DIR / "jobs")))
TRAINING_BACKEND = env_choice("TRAINING_BACKEND", "local", {"local", "slurm"})
TRAINING_HEARTBEAT_SECONDS = env_int("TRAINING_HEARTBEAT_SECONDS", 10, minimum=1)
TRAINING_STALE_AFTER_SECONDS = env_int("TRAINING_STALE_AFTER_SECONDS", 120, minimum=5)
# The trainer's arithmetic (train.precision in every job.json): "auto" lets the trainer choose by
# the machine it runs on (README, "Precision on a CPU"); "fp32" or "bf16" force one. The same
# three values as the trainer's PRECISIONS (training.trainer.config; settings import no app code).
TRAINING_PRECISION = env_choice("TRAINING_PRECISION", "auto", {"auto", "bf16", "fp32"})
# Fallback throughput for the duration estimate until a backend has finished jobs of its own.
TRAINING_DEFAULT_TOKENS_PER_SECOND = env_float("TRAINING_DEFAULT_TOKENS_PER_SECOND", 2000.0)

# --- Serving --------------------------------------------------------------------------------
# Adapters resident per serving process (LRU). About 20 MiB each for the default base's recipe
# (SmolLM2-135M, r 16, all linear layers; bench/serving.py): 32 keep a 20-tenant rotation
# resident for about 0.7 GiB. A rotation larger than the cache loads an adapter on every request.
ADAPTER_CACHE_SIZE = env_int("ADAPTER_CACHE_SIZE", 32, minimum=1)
# Base models resident at once in a serving process (LRU): versions trained on different bases.
BASE_MODEL_CACHE_SIZE = env_int("BASE_MODEL_CACHE_SIZE", 2, minimum=1)
CHAT_MAX_NEW_TOKENS = env_int("CHAT_MAX_NEW_TOKENS", 256, minimum=1)
# Greedy chat requests that arrive within this window of each other are generated in one batch
# (up to SERVING_MAX_BATCH, whatever adapter each needs: adapters.lora_rows); 1 = off. The
# window must cover how far apart requests sent together reach the batcher through Django: on
# 2 busy cores 4 clients' first requests spread over more than 10 ms (bench/serving.py split its
# batches at 10), while a 64-token answer takes seconds, so 50 ms costs about 2% of a request.
SERVING_MAX_BATCH = env_int("SERVING_MAX_BATCH", 8, minimum=1)
SERVING_BATCH_WINDOW_MS = env_int("SERVING_BATCH_WINDOW_MS", 50, minimum=0)
# Decisions on live traffic (A/B auto-promotion, auto-rollback: adapters.metrics) count a
# conversation once this many minutes have passed since the version's first answer in it, with the
# feedback known by then, so that a counted outcome is final (0: count at once, as it stands).
ONLINE_DECISION_SETTLE_MINUTES = env_int("ONLINE_DECISION_SETTLE_MINUTES", 30, minimum=0)
# A multi-LoRA inference server that speaks vLLM's HTTP API (adapters.inference_server): when set,
# chat requests for its base are generated there, each ready version registered as <tenant>-v<N>.
INFERENCE_SERVER_URL = env_str("INFERENCE_SERVER_URL", "") or ""
INFERENCE_SERVER_API_KEY = env_str("INFERENCE_SERVER_API_KEY", "") or ""
# The name the server serves the base under (vllm serve --served-model-name; default its path).
INFERENCE_SERVER_BASE_MODEL = env_str("INFERENCE_SERVER_BASE_MODEL", "") or ""
INFERENCE_SERVER_TIMEOUT = env_float("INFERENCE_SERVER_TIMEOUT", 120.0)
# Verified adapter copies for the server (a volume it reads), and that folder as it mounts it.
INFERENCE_SERVER_ADAPTER_DIR = env_str("INFERENCE_SERVER_ADAPTER_DIR",
                                       str(VAR_DIR / "inference-adapters"))
INFERENCE_SERVER_ADAPTER_DIR_ON_SERVER = env_str("INFERENCE_SERVER_ADAPTER_DIR_ON_SERVER", "") or ""

# --- Evaluation of every new version (adapters.services.evaluation) --------------------------
# Up to this many feedback rows a stats read compiles readiness.methods in the request; above,
# it answers from the last compile and an RQ job compiles again (training.readiness).
READINESS_SYNC_MAX_ROWS = env_int("READINESS_SYNC_MAX_ROWS", 20_000, minimum=0)
EVALUATION_ENABLED = env_bool("EVALUATION_ENABLED", True)
# Items per set (golden, trained, general, safety); each is asked of the new version, the active
# one and the base (whose answers are cached), so these bound the cost of a job's evaluation.
EVALUATION_MAX_ITEMS = {
    "golden": env_int("EVALUATION_MAX_GOLDEN", 40, minimum=0),
    "trained": env_int("EVALUATION_MAX_TRAINED", 30, minimum=0),
    "general": env_int("EVALUATION_MAX_GENERAL", 40, minimum=0),
    "safety": env_int("EVALUATION_MAX_SAFETY", 20, minimum=0),
}
EVALUATION_MAX_NEW_TOKENS = env_int("EVALUATION_MAX_NEW_TOKENS", 32, minimum=1)
# The platform's evaluation questions (the general-knowledge set every version is scored on, the
# base-knowledge set): never replayed from a tenant's traffic (training.replay_traffic).
EVALUATION_QUESTION_FILES = [
    BASE_DIR / "adapters" / "assets" / "general_knowledge.jsonl",
    BASE_DIR / "training" / "trainer" / "assets" / "base_knowledge.jsonl",
]
# The activation gate: a version that keeps less than this share of the general questions the
# base answered right needs `force` (as does one worse than the active version on the golden set).
ACTIVATION_MIN_GENERAL_KEPT = env_float("ACTIVATION_MIN_GENERAL_KEPT", 0.8)

# --- Security -------------------------------------------------------------------------------
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SECURE = env_bool("SECURE_COOKIES", not DEBUG and not EMBEDDED)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
# JSON request bodies nesting deeper than this are refused (synapsex_site.middleware).
JSON_MAX_DEPTH = env_int("JSON_MAX_DEPTH", 64, minimum=8)
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", False)
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0, minimum=0)
SECURE_PROXY_SSL_HEADER = (
    ("HTTP_X_FORWARDED_PROTO", "https") if env_bool("BEHIND_TLS_PROXY") else None
)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {"django.request": {"level": "ERROR"}},
}

# --- Slurm / LUMI compute backend (training/backends/slurm.py; docs in the README) ------------
# Defaults describe LUMI-G (lumi.csc.fi, DeepSpeed ZeRO-3 in the LUMI AI container, one task per
# GCD); any other Slurm cluster overrides them (scripts/slurm-up.sh prints a test cluster's set).
SLURM_SSH_HOST = env_str("SLURM_SSH_HOST", "lumi.csc.fi")
SLURM_SSH_PORT = env_int("SLURM_SSH_PORT", 22, minimum=1)
SLURM_SSH_USER = env_str("SLURM_SSH_USER", "")
# Keys only (LUMI has no passwords); host keys are checked against this file, never added.
SLURM_SSH_KEY_FILE = env_str("SLURM_SSH_KEY_FILE", str(Path.home() / ".ssh" / "id_ed25519"))
SLURM_SSH_KEY_PASSPHRASE = env_str("SLURM_SSH_KEY_PASSPHRASE")
SLURM_SSH_KNOWN_HOSTS = env_str("SLURM_SSH_KNOWN_HOSTS", str(Path.home() / ".ssh" / "known_hosts"))
SLURM_SSH_TIMEOUT = env_int("SLURM_SSH_TIMEOUT", 20, minimum=1)
SLURM_ACCOUNT = env_str("SLURM_ACCOUNT", "")  # project_<number> on LUMI
# Every job gets <SLURM_REMOTE_WORK_DIR>/<job id>/ (job.json, data, script, checkpoints, adapter).
SLURM_REMOTE_WORK_DIR = env_str(
    "SLURM_REMOTE_WORK_DIR", f"/scratch/{SLURM_ACCOUNT}/synapsex/jobs" if SLURM_ACCOUNT else ""
)
SLURM_PARTITION = env_str("SLURM_PARTITION", "standard-g")
SLURM_NODES = env_int("SLURM_NODES", 1, minimum=1)
SLURM_GPUS_PER_NODE = env_int("SLURM_GPUS_PER_NODE", 8, minimum=0)  # GCDs on LUMI-G
SLURM_NTASKS_PER_NODE = env_int("SLURM_NTASKS_PER_NODE", 8, minimum=1)
SLURM_CPUS_PER_TASK = env_int("SLURM_CPUS_PER_TASK", 7, minimum=1)
SLURM_MEM_PER_GPU = env_str("SLURM_MEM_PER_GPU", "60G")
SLURM_MEM = env_str("SLURM_MEM", "")  # memory per node, instead of per GPU
SLURM_TIME_LIMIT = env_str("SLURM_TIME_LIMIT", "12:00:00")
# singularity: srun + container + DeepSpeed (LUMI); srun: srun without a container;
# plain: `<python> -m training.trainer --config job.json` in the batch step itself.
SLURM_LAUNCHER = env_choice("SLURM_LAUNCHER", "singularity", {"singularity", "srun", "plain"})
SLURM_CONTAINER_IMAGE = env_str(
    "SLURM_CONTAINER_IMAGE", "/appl/local/laifs/containers/lumi-multitorch-latest.sif"
)
# Bind mounts by full path (LUMI project folders are symlinks); default /scratch/<account>.
SLURM_CONTAINER_BINDS = env_list(
    "SLURM_CONTAINER_BINDS", [f"/scratch/{SLURM_ACCOUNT}"] if SLURM_ACCOUNT else []
)
# Shell lines run before the launch, separated by ";" or newlines.
SLURM_MODULES = env_str(
    "SLURM_MODULES",
    "module use /appl/local/laifs/modules;module load lumi-aif-singularity-bindings",
)
# KEY=VALUE pairs separated by ";" (values may use $USER and $SLURM_* variables).
SLURM_ENV = env_str(
    "SLURM_ENV",
    "MIOPEN_USER_DB_PATH=/tmp/miopen-config-$USER;MIOPEN_CUSTOM_CACHE_DIR=/tmp/miopen-cache-$USER;"
    "NCCL_SOCKET_IFNAME=hsn0,hsn1,hsn2,hsn3;NCCL_NET_GDR_LEVEL=PHB;HF_HUB_OFFLINE=1;"
    "TOKENIZERS_PARALLELISM=false",
)
SLURM_CPU_BIND_MASKS = env_str(
    "SLURM_CPU_BIND_MASKS",
    "0x00fe000000000000,0xfe00000000000000,0x0000000000fe0000,0x00000000fe000000,"
    "0x00000000000000fe,0x000000000000fe00,0x000000fe00000000,0x0000fe0000000000",
)
SLURM_REMOTE_PYTHON = env_str("SLURM_REMOTE_PYTHON", "python")
# The base model's folder on the cluster; empty: the local BASE_MODEL_PATH is staged once into
# <SLURM_REMOTE_WORK_DIR>/_models/.
SLURM_REMOTE_BASE_MODEL_PATH = env_str("SLURM_REMOTE_BASE_MODEL_PATH", "")
SLURM_DEEPSPEED_STAGE = env_int("SLURM_DEEPSPEED_STAGE", 3, minimum=0)
# accounting: `sacct -X` (LUMI, slurmdbd); jobcomp: `sacct -c` (clusters without slurmdbd).
SLURM_SACCT_MODE = env_choice("SLURM_SACCT_MODE", "accounting", {"accounting", "jobcomp"})
SLURM_POLL_INTERVAL_SECONDS = env_int("SLURM_POLL_INTERVAL_SECONDS", 30, minimum=1)
# Partitions billed per whole node (4 GPU-hours per node-hour); others by resources.
SLURM_WHOLE_NODE_PARTITIONS = env_list("SLURM_WHOLE_NODE_PARTITIONS", ["standard-g"])
# The project's GPU-hour budget (0: no limit) counted from this date (YYYY-MM-DD; empty: ever).
SLURM_ALLOCATION_GPU_HOURS = env_float("SLURM_ALLOCATION_GPU_HOURS", 0.0)
SLURM_ALLOCATION_PERIOD_START = env_str("SLURM_ALLOCATION_PERIOD_START", "")
# How often the runner resubmits (with --resume) a job lost to TIMEOUT/PREEMPTED/NODE_FAIL.
TRAINING_MAX_RESUBMITS = env_int("TRAINING_MAX_RESUBMITS", 3, minimum=0)

# --- Declared defaults of settings the apps read (one place to see and override them) ---------
# Each value is the default its reader falls back to, so declaring them changes nothing.
# A/B comparison: an arm counts as significant only with at least this much feedback.
AB_MIN_FEEDBACK_PER_ARM = env_int("AB_MIN_FEEDBACK_PER_ARM", 20, minimum=1)
# Serving's local copies of adapter files (sha256-verified from storage).
ADAPTER_LOCAL_CACHE_DIR = env_str("ADAPTER_LOCAL_CACHE_DIR", str(VAR_DIR / "adapter-cache"))
# How often the dashboard's job page asks for news while a job runs.
DASHBOARD_JOB_POLL_MS = env_int("DASHBOARD_JOB_POLL_MS", 1500, minimum=100)
# Regions whose phone number formats the PII redaction recognises (feedback.pii).
PII_PHONE_REGIONS = tuple(env_list("PII_PHONE_REGIONS", ["US", "GB", "FI", "DE", "SE"]))
# Local backend: seconds a cancelled trainer gets to stop before it is killed; OMP threads of a
# local trainer (empty: the library's default); the runner's poll interval.
TRAINING_CANCEL_GRACE_SECONDS = env_float("TRAINING_CANCEL_GRACE_SECONDS", 10.0)
TRAINING_LOCAL_THREADS = env_int("TRAINING_LOCAL_THREADS", 0, minimum=0) or None
TRAINING_POLL_SECONDS = env_float("TRAINING_POLL_SECONDS", 1.0)
# Webhook delivery retries, seconds between attempts.
WEBHOOK_RETRY_INTERVALS = [int(s) for s in env_list("WEBHOOK_RETRY_INTERVALS",
                                                    ["10", "60", "300", "1800"])]
# Webhooks go only to public addresses (checked at registration and at each delivery, after DNS
# resolution); hosts listed here (names or IP literals) may resolve to loopback or private ones.
WEBHOOK_ALLOWED_HOSTS = env_list("WEBHOOK_ALLOWED_HOSTS", [])
# Seconds a client is told to wait (Retry-After) when the database is unavailable (503).
DATABASE_RETRY_AFTER_SECONDS = env_int("DATABASE_RETRY_AFTER_SECONDS", 5, minimum=1)
# A cluster job whose state cannot be learned (Slurm forgot it, the cluster does not answer)
# for this long fails (`cluster_fault`, not counted against the tenant's quota).
CLUSTER_UNKNOWN_GIVE_UP_SECONDS = env_int("CLUSTER_UNKNOWN_GIVE_UP_SECONDS", 3600, minimum=60)
