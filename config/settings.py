"""Settings, read from the environment.

With nothing set, the site runs on embedded defaults: SQLite for the database,
kombu's SQLAlchemy transport over a SQLite file for the Celery broker and a file
cache. Set DATABASE_URL and REDIS_URL to run on PostgreSQL and Redis.
"""

import math
import re
from datetime import timedelta
from pathlib import Path

import dj_database_url
from csp.constants import NONCE
from django.core.exceptions import ImproperlyConfigured

from .env import env_bool, env_choice, env_float, env_int, env_json, env_list, env_ratios, env_str

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = Path(env_str("DATA_DIR", str(BASE_DIR / "var")))
DATA_DIR.mkdir(parents=True, exist_ok=True)

DEBUG = env_bool("DEBUG", False)
SECRET_KEY = env_str("SECRET_KEY", required=not DEBUG) or "insecure-key-for-local-development-only"
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = env_bool("SECURE_COOKIES", False)
if env_bool("BEHIND_HTTPS_PROXY", False):  # only a proxy that sets the header may be trusted with it
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# A site served over HTTPS only (SECURE_COOKIES) also redirects plain HTTP to HTTPS and, by HSTS, tells browsers to
# use nothing else for a year. Behind a proxy that speaks HTTP to the site, BEHIND_HTTPS_PROXY must be set too, or
# every request is redirected again.
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", SESSION_COOKIE_SECURE)
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31_536_000 if SESSION_COOKIE_SECURE else 0, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", SESSION_COOKIE_SECURE)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", SESSION_COOKIE_SECURE)
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "csp",
    "axes",  # sign-in throttling
    "labeling",
]

MIDDLEWARE = [
    "labeling.middleware.DatabaseUnavailableMiddleware",  # first, so it sees every 500 the database caused
    "django.middleware.security.SecurityMiddleware",
    "csp.middleware.CSPMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "labeling.api.middleware.ApiInputGuard",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "axes.middleware.AxesMiddleware",  # last: turns a refused sign-in into the lockout page
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

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
                "labeling.context_processors.roles",
            ],
        },
    },
]


def _database():
    url = env_str("DATABASE_URL")
    if url is None:
        return {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": DATA_DIR / "db.sqlite3",
            # A file, not memory, so that a Celery worker started by the tests sees the test data.
            "TEST": {"NAME": DATA_DIR / "test-db.sqlite3"},
            "OPTIONS": {
                "timeout": 30,
                "transaction_mode": "IMMEDIATE",
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            },
        }
    try:
        # Health checks: a kept connection that a database restart broke is replaced at the next request
        # instead of failing it.
        config = dj_database_url.parse(url, conn_max_age=60, conn_health_checks=True)
    except Exception as exc:  # dj_database_url raises several kinds for a bad URL
        raise ImproperlyConfigured(f"DATABASE_URL is not a database URL Django can use: {exc}") from None
    if not config.get("ENGINE"):
        raise ImproperlyConfigured(f"DATABASE_URL names an unknown database scheme: {url.split(':', 1)[0]!r}.")
    if config["ENGINE"] == "django.db.backends.postgresql":
        # No JIT compilation: the site's queries touch few rows, but the lease's plan is costed high when a lane of
        # the queue holds no fitting task, and compiling it took PostgreSQL 0.1 to 0.6 s of CPU for a 2 ms query.
        config.setdefault("OPTIONS", {})["options"] = "-c jit=off"
    return config


DATABASES = {"default": _database()}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env_str("REDIS_URL")
if REDIS_URL:
    CACHES = {"default": {"BACKEND": "config.cache.RedisCache", "LOCATION": REDIS_URL}}
else:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": DATA_DIR / "cache",
        }
    }

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",  # first: refuses a locked-out sign-in before any password is checked
    "django.contrib.auth.backends.ModelBackend",
]
# Sign-in throttling: after LOGIN_FAILURE_LIMIT wrong passwords for one account from one address, that account is
# refused from that address for LOGIN_COOLOFF_MINUTES (status 429, with the time to try again). Attempts during the
# lockout are refused without counting, so the time shown holds; a successful sign-in clears the failures.
AXES_FAILURE_LIMIT = env_int("LOGIN_FAILURE_LIMIT", 5, minimum=1)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("LOGIN_COOLOFF_MINUTES", 15, minimum=1))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_CALLABLE = "labeling.views.people.sign_in_locked_out"
AXES_CLIENT_IP_CALLABLE = "labeling.views.people.client_address"
AXES_VERBOSE = False
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "start"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = env_str("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = DATA_DIR / "static"
STATIC_ROOT.mkdir(exist_ok=True)
STATICFILES_DIRS = [BASE_DIR / "static"]
MEDIA_URL = "media/"
MEDIA_ROOT = DATA_DIR / "media"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = True

# Content-Security-Policy on every response: scripts and styles only from this site's static files,
# so markup that slipped into a page cannot run or restyle it. No inline <script>, <style> or style="".
# A page that reads request.csp_nonce (only the Redoc API docs, for the <style> elements Redoc writes)
# adds its nonce to style-src; every other page sends style-src 'self' alone.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'", NONCE],
        "img-src": ["'self'", "data:"],
        "object-src": ["'none'"],
        "base-uri": ["'none'"],
        "frame-ancestors": ["'none'"],
        "form-action": ["'self'"],
        "connect-src": ["'self'"],
    },
}

FILE_UPLOAD_MAX_MEMORY_SIZE = 5 * 1024 * 1024
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("DATA_UPLOAD_MAX_MEMORY_SIZE", 20 * 1024 * 1024, minimum=1)
# API bodies read whole into memory (JSON, url-encoded forms): larger ones get a 413, deeper ones a 400.
API_JSON_MAX_BYTES = env_int("API_JSON_MAX_BYTES", 2 * 1024 * 1024, minimum=1)
API_JSON_MAX_DEPTH = env_int("API_JSON_MAX_DEPTH", 32, minimum=1, maximum=500)

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "labeling.api.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 100,
    # JSON only, errors included: programs read the API, people read the schema at /api/docs/.
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": [
        "labeling.api.parsers.StrictJSONParser",
        "labeling.api.parsers.StrictFormParser",
        "labeling.api.parsers.StrictMultiPartParser",
    ],
    "DEFAULT_SCHEMA_CLASS": "labeling.api.schema.AutoSchema",
    "EXCEPTION_HANDLER": "labeling.api.exceptions.exception_handler",
    "DEFAULT_THROTTLE_CLASSES": ["rest_framework.throttling.UserRateThrottle"],
    "DEFAULT_THROTTLE_RATES": {
        "user": env_str("API_THROTTLE_RATE", "6000/hour"),
        "exports": env_str("API_EXPORT_THROTTLE_RATE", "120/hour"),
    },
}
SPECTACULAR_SETTINGS = {
    "TITLE": "RLHF labeling platform API",
    "DESCRIPTION": "Prompts, labeling tasks, human feedback and datasets for training language models.",
    "VERSION": "0.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAuthenticated"],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "ENUM_NAME_OVERRIDES": {
        "SkipReasonEnum": "labeling.models.Assignment.SkipReason",
        "ExportKindEnum": "labeling.models.Export.Kind",
        "ExportFormatEnum": "labeling.models.Export.Format",
        "ImportFormatEnum": "labeling.models.ImportJob.Format",
        "JobStateEnum": "labeling.models.intake.JobState",
        "ModelVersionKindEnum": "labeling.models.ModelVersion.Kind",
        "TrainingRunKindEnum": "labeling.models.TrainingRun.Kind",
        "TrainingRunStateEnum": "labeling.models.TrainingRun.State",
        "ConversationStateEnum": "labeling.models.Conversation.State",
        "ReplyStateEnum": "labeling.models.ChatMessage.State",
        "EvaluationStateEnum": "labeling.models.Evaluation.State",
    },
}

# Celery: Redis when REDIS_URL is set, otherwise a broker that needs no server.
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL") or REDIS_URL or f"sqla+sqlite:///{DATA_DIR / 'celery-broker.sqlite3'}"
CELERY_TASK_ALWAYS_EAGER = False
CELERY_BEAT_SCHEDULE_FILENAME = str(DATA_DIR / "celerybeat-schedule")

# Prompt intake, after InstructGPT's data hygiene (Ouyang et al. 2022, appendix A).
PROMPT_DEDUP_PREFIX_CHARS = env_int("PROMPT_DEDUP_PREFIX_CHARS", 100, minimum=0)
# Jaccard similarity of word bigrams from which a prompt is a near-duplicate (MinHash LSH); 0 turns it off.
PROMPT_NEAR_DUPLICATE_THRESHOLD = env_float("PROMPT_NEAR_DUPLICATE_THRESHOLD", 0.8, minimum=0, maximum=1)
PROMPT_CAP_PER_USER = env_int("PROMPT_CAP_PER_USER", 200, minimum=0)
PROMPT_SPLIT_RATIOS = env_ratios("PROMPT_SPLIT_RATIOS", (0.8, 0.1, 0.1), count=3)
PROMPT_REDACT_PII = env_bool("PROMPT_REDACT_PII", True)
PROMPT_MAX_CHARS = env_int("PROMPT_MAX_CHARS", 8000, minimum=1)
PROMPT_LANGUAGES = [
    code.lower()
    for code in env_list(
        "PROMPT_LANGUAGES", ["en", "es", "fr", "de", "it", "pt", "nl", "pl", "ru", "ja", "zh", "ko", "ar", "hi", "tr"]
    )
]
PROMPT_IMPORT_INLINE_MAX_BYTES = env_int("PROMPT_IMPORT_INLINE_MAX_BYTES", 256 * 1024, minimum=0)
PROMPT_IMPORT_MAX_REPORTED_ERRORS = env_int("PROMPT_IMPORT_MAX_REPORTED_ERRORS", 1000, minimum=1)
INTAKE_ANNOTATE = env_bool("INTAKE_ANNOTATE", True)
INTAKE_DEMONSTRATION_SHARE = env_float("INTAKE_DEMONSTRATION_SHARE", 0.25, minimum=0, maximum=1)

# Labeling
LEASE_MINUTES = env_int("LEASE_MINUTES", 30, minimum=1)
# Each lease draws the kind of task it offers by these shares, among the kinds that wait for the labeler: the work
# that moves the loop (rankings, evaluations among them, and demonstrations) comes ahead of annotations. A kind with
# a share of 0 comes only when no other kind waits. Kinds left out get 0. `manage.py check` checks the names.
QUEUE_SHARES = env_json("QUEUE_SHARES", {"rank_completions": 0.6, "write_demonstration": 0.2, "chat": 0.1,
                                         "annotate_prompt": 0.1, "write_prompt": 0})
if not all(type(v) in (int, float) and math.isfinite(v) and v >= 0 for v in QUEUE_SHARES.values()):
    raise ImproperlyConfigured(f"QUEUE_SHARES must map task kinds to non-negative numbers; got {QUEUE_SHARES!r}.")
# A demonstration's page shows the active model's reply to its prompt as a suggestion, and those prompts are sampled
# first. True: a demonstration task waits, unoffered, until its prompt has one.
DEMONSTRATIONS_WAIT_FOR_SUGGESTION = env_bool("DEMONSTRATIONS_WAIT_FOR_SUGGESTION", False)
# A share of ranking and annotation tasks goes to several labelers, for agreement measures.
OVERLAP_SHARE = env_float("OVERLAP_SHARE", 0.1, minimum=0, maximum=1)
OVERLAP_ANNOTATIONS = env_int("OVERLAP_ANNOTATIONS", 3, minimum=2)
# The size of an answer (labeling/answers.py): checked on submit, by `check_data`, and by exports.
ANSWER_MAX_TURN_CHARS = env_int("ANSWER_MAX_TURN_CHARS", 20_000, minimum=1)
ANSWER_MAX_CONVERSATION_CHARS = env_int("ANSWER_MAX_CONVERSATION_CHARS", 100_000, minimum=1)
ANSWER_MAX_TURNS = env_int("ANSWER_MAX_TURNS", 40, minimum=2)
ANSWER_MAX_NOTES_CHARS = env_int("ANSWER_MAX_NOTES_CHARS", 2_000, minimum=1)  # notes, reasons, other free text

# Screening, onboarding and quality (InstructGPT's labeler selection, Ouyang et al. 2022, appendix B.1)
OPEN_APPLICATIONS = env_bool("OPEN_APPLICATIONS", False)  # anyone may apply at /apply/, not only the invited
INVITATION_DAYS = env_int("INVITATION_DAYS", 14, minimum=1)
SCREENING_FLAG_CUTOFF = env_float("SCREENING_FLAG_CUTOFF", 0.75, minimum=0, maximum=1)
SCREENING_RANKING_CUTOFF = env_float("SCREENING_RANKING_CUTOFF", 0.75, minimum=0, maximum=1)
SCREENING_DEMONSTRATION_CUTOFF = env_float("SCREENING_DEMONSTRATION_CUTOFF", 6.0, minimum=1, maximum=7)
ONBOARDING_PRACTICE_TASKS = env_int("ONBOARDING_PRACTICE_TASKS", 3, minimum=0)
GOLD_TASK_RATE = env_float("GOLD_TASK_RATE", 0.05, minimum=0, maximum=1)
# Labelers below either are highlighted on the team page.
QUALITY_MIN_GOLD_ACCURACY = env_float("QUALITY_MIN_GOLD_ACCURACY", 0.7, minimum=0, maximum=1)
QUALITY_MIN_AGREEMENT = env_float("QUALITY_MIN_AGREEMENT", 0.6, minimum=0, maximum=1)

# The loop: sampling completions and training on the collected data (the `gpu` queue).
# The model the first policy and SFT versions are; any local Hugging Face folder.
POLICY_MODEL = env_str("POLICY_MODEL", str(BASE_DIR / "artifacts" / "models" / "SmolLM2-135M-Instruct"))
MODELS_DIR = Path(env_str("MODELS_DIR", str(DATA_DIR / "models")))
SAMPLE_K = env_int("SAMPLE_K", 4, minimum=4, maximum=9)
SAMPLE_OLDER_SHARE = env_float("SAMPLE_OLDER_SHARE", 0.0, minimum=0, maximum=1)
SAMPLE_PROMPTS_PER_TASK = env_int("SAMPLE_PROMPTS_PER_TASK", 16, minimum=1)
# Sampling stops while this many ranking tasks wait to be done, so that labelers rank the newest policy's outputs
# rather than a backlog of older ones; 0: every prompt is sampled as soon as it comes in.
RANKING_BUFFER = env_int("RANKING_BUFFER", 0, minimum=0)
SAMPLE_MAX_NEW_TOKENS = env_int("SAMPLE_MAX_NEW_TOKENS", 96, minimum=1)
SAMPLE_TEMPERATURE = env_float("SAMPLE_TEMPERATURE", 1.0, minimum=0)
# Where completions come from: empty, the gpu worker's own process (the model kept loaded between tasks, freed
# before a training run); or an OpenAI-compatible /v1 endpoint (vLLM, TGI, `python -m rlhf serve`) that serves each
# model version as "<kind>-<name>" (policy-base, policy-ppo-12) and must see MODELS_DIR at the same path.
SAMPLER_URL = env_str("SAMPLER_URL", "").rstrip("/")
if SAMPLER_URL and not re.fullmatch(r"https?://[^/\s]+(/\S*)?", SAMPLER_URL):
    raise ImproperlyConfigured(f"SAMPLER_URL must be an http(s) URL such as http://vllm:8000/v1, not {SAMPLER_URL!r}.")
SAMPLER_API_KEY = env_str("SAMPLER_API_KEY", "")  # sent as a bearer token (vLLM's and rlhf serve's --api-key)
# How the endpoint is made to serve a newly activated version: "rlhf" (rlhf serve's POST /v1/load_model), "vllm"
# (POST /v1/load_lora_adapter, for adapter versions; full weights need a restart), or "fixed" (someone else does).
SAMPLER_SERVER = env_choice("SAMPLER_SERVER", "fixed", ("rlhf", "vllm", "fixed"))
SAMPLER_TIMEOUT_SECONDS = env_float("SAMPLER_TIMEOUT_SECONDS", 300.0, minimum=1)
# A sampler that is down or answers errors: the task tries again after this, doubling each time up to the maximum.
SAMPLER_RETRY_SECONDS = env_float("SAMPLER_RETRY_SECONDS", 5.0, minimum=0.1)
SAMPLER_RETRY_MAX_SECONDS = env_float("SAMPLER_RETRY_MAX_SECONDS", 300.0, minimum=0.1)
# Chats with the model (the `chat` queue): a labeler's turns per conversation, a reply's length, and K, the
# outputs ranked for one message of an ended chat (its original and K - 1 alternatives from the same context).
CHAT_MAX_TURNS = env_int("CHAT_MAX_TURNS", 10, minimum=1)
CHAT_MAX_NEW_TOKENS = env_int("CHAT_MAX_NEW_TOKENS", 256, minimum=1)
CHAT_TEMPERATURE = env_float("CHAT_TEMPERATURE", 0.7, minimum=0)
CHAT_RANK_K = env_int("CHAT_RANK_K", SAMPLE_K, minimum=4, maximum=9)
# A streamed reply's connection is closed after this long (the page reconnects where it left off).
CHAT_STREAM_SECONDS = env_float("CHAT_STREAM_SECONDS", 300.0, minimum=1)
CHAT_STREAMS_PER_USER = env_int("CHAT_STREAMS_PER_USER", 6, minimum=1)  # each holds a web thread while open
# Human evaluations: a candidate against baselines on test-split prompts; their tasks come first in the queue.
EVALUATION_MAX_PROMPTS = env_int("EVALUATION_MAX_PROMPTS", 2000, minimum=1)
EVALUATION_PRIORITY = env_int("EVALUATION_PRIORITY", 10, minimum=-1000, maximum=1000)
EVALUATION_TEMPERATURE = env_float("EVALUATION_TEMPERATURE", 0.7, minimum=0)
# The human gate: a policy that passed the reward-model gate waits for humans to judge it against the active one
# (HUMAN_GATE_PROMPTS test prompts); after HUMAN_GATE_MIN_JUDGMENTS judgments it is activated when the low end of
# its win rate's 95% interval reaches HUMAN_GATE_MIN_WIN_RATE, and refused when the high end is below it.
HUMAN_GATE = env_bool("HUMAN_GATE", False)
# Without the human gate: this many test prompts for an evaluation of each policy the reward-model gate activates,
# against the policy it replaced (0: none).
EVALUATE_NEW_POLICIES = env_int("EVALUATE_NEW_POLICIES", 0, minimum=0)
HUMAN_GATE_PROMPTS = env_int("HUMAN_GATE_PROMPTS", 50, minimum=1)
HUMAN_GATE_MIN_JUDGMENTS = env_int("HUMAN_GATE_MIN_JUDGMENTS", 30, minimum=1)
HUMAN_GATE_MIN_WIN_RATE = env_float("HUMAN_GATE_MIN_WIN_RATE", 0.5, minimum=0, maximum=1)
TRAIN_RM_AFTER_COMPARISONS = env_int("TRAIN_RM_AFTER_COMPARISONS", 500, minimum=1)
TRAIN_SFT_AFTER_DEMONSTRATIONS = env_int("TRAIN_SFT_AFTER_DEMONSTRATIONS", 100, minimum=1)
# rlhf options per kind, e.g. {"reward": {"epochs": 2}, "ppo": {"steps": 20}}; the gate evaluates with the same.
# `manage.py check` and every run request check them by name, type and range.
TRAINING_OPTIONS = env_json("TRAINING_OPTIONS", {})
TRAINING_PROCESSES = env_int("TRAINING_PROCESSES", 1, minimum=1)  # more than one runs rlhf under torchrun
# Where a policy round starts: "sft", from the active SFT model as InstructGPT; or "active", from the active
# policy, as iterated rounds may. Either way the active SFT model is the KL reference.
POLICY_START = env_choice("POLICY_START", "sft", ("sft", "active"))
# The ptx term's data: a local JSONL/Parquet file of `text` or `messages` rows; by default the train split
# of the SFT demonstrations.
PTX_DATA = env_str("PTX_DATA", "")
RM_GATE_TOLERANCE = env_float("RM_GATE_TOLERANCE", 0.0, minimum=0, maximum=1)
# The first reward model must beat these baselines on the validation rankings by RM_FIRST_MIN_MARGIN: chance, and
# the rules "the longer completion wins" and "the shorter wins". Leave one out where length is the very preference
# labelers are asked for (say, "shorter is better" for summaries).
RM_FIRST_BASELINES = env_list("RM_FIRST_BASELINES", ["chance", "longer_wins", "shorter_wins"])
if not RM_FIRST_BASELINES or set(RM_FIRST_BASELINES) - {"chance", "longer_wins", "shorter_wins"}:
    raise ImproperlyConfigured("RM_FIRST_BASELINES must name one or more of chance, longer_wins, shorter_wins; got "
                               f"{','.join(RM_FIRST_BASELINES)!r}.")
# A negative margin lets a first model below them through: only for a smoke test of the loop on noise.
RM_FIRST_MIN_MARGIN = env_float("RM_FIRST_MIN_MARGIN", 0.02, minimum=-1, maximum=1)
POLICY_GATE_MIN_WIN_RATE = env_float("POLICY_GATE_MIN_WIN_RATE", 0.5, minimum=0, maximum=1)
POLICY_GATE_MAX_KL = env_float("POLICY_GATE_MAX_KL", 20.0, minimum=0)
TRAINING_HEARTBEAT_SECONDS = env_float("TRAINING_HEARTBEAT_SECONDS", 5.0, minimum=0.1)
TRAINING_STALE_AFTER_SECONDS = env_float("TRAINING_STALE_AFTER_SECONDS", 120.0, minimum=1)
TRAINING_REQUEUE_LOST = env_bool("TRAINING_REQUEUE_LOST", False)  # a lost run: queue it again rather than fail it

# Exports
# Pseudonyms are a keyed hash of the user id; keep this key (by default SECRET_KEY) to keep them stable.
EXPORT_PSEUDONYM_KEY = env_str("EXPORT_PSEUDONYM_KEY", "")
# Written into every manifest; by default the git revision of the checkout.
CODE_VERSION = env_str("CODE_VERSION", "")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
}
