#!/usr/bin/env bash
# Daily full refresh of one ingestion, for cron: preview, execute once per day, wait for the run.
#
# Usage:
#   AUTOLOADER_URL=https://autoloader.example.com AUTOLOADER_TOKEN=<token> \
#   INGESTION_ID=users-snapshot  examples/daily_full_refresh.sh
#
# Required environment:
#   AUTOLOADER_URL          the server's root URL (the script adds /api/v1)
#   AUTOLOADER_TOKEN        an API token of an admin of the ingestion's tenant
#   INGESTION_ID            the ingestion to refresh
# Optional environment:
#   AUTOLOADER_TENANT       tenant slug, for a token whose user is in several tenants
#   POLL_INTERVAL_SECONDS   pause between two looks at the run (default 30)
#   TIMEOUT_SECONDS         how long to wait for the run to end (default 21600, 6 h)
#   JSON_TOOL               jq or python3 (default: jq when installed, else python3)
#
# What it does:
#   1. a dry-run (changes nothing): prints files, GB, cost, duration and warnings;
#   2. the full refresh, with confirm=true, the dry-run's plan_id when the server says
#      the cost needs one, and the Idempotency-Key "daily-full-refresh-<id>-<UTC date>":
#      a second invocation the same day replays the first answer instead of refreshing again;
#   3. polls GET /api/v1/runs/<run_id> until the run ends.
#
# Exit codes: 0 the run ended SUCCESS; 1 anything else (refused, failed, partial, timed out);
#             2 bad usage.
#
# crontab (02:00 UTC every day; keep the token in a file only the cron user can read):
#   0 2 * * *  set -a; . /etc/autoloader/users-snapshot.env; /opt/autoloader/examples/daily_full_refresh.sh
set -euo pipefail

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
bad_usage() {
    echo "error: $*" >&2
    echo "Run '$0 --help' for usage." >&2
    exit 2
}
log() { echo "$(date -u +%Y-%m-%dT%H:%M:%SZ) $*"; }
fail() {
    log "FAILED: $*" >&2
    exit 1
}

# --- arguments and environment ----------------------------------------------------------
case "${1:-}" in
    -h | --help) usage; exit 0 ;;
    "") ;;
    *) bad_usage "unexpected argument: $1" ;;
esac
for name in AUTOLOADER_URL AUTOLOADER_TOKEN INGESTION_ID; do
    [[ -n "${!name:-}" ]] || bad_usage "$name is not set"
done
POLL_INTERVAL_SECONDS=${POLL_INTERVAL_SECONDS:-30}
TIMEOUT_SECONDS=${TIMEOUT_SECONDS:-21600}
[[ $POLL_INTERVAL_SECONDS =~ ^[0-9]+([.][0-9]+)?$ ]] \
    || bad_usage "POLL_INTERVAL_SECONDS must be a number of seconds"
[[ $TIMEOUT_SECONDS =~ ^[0-9]+$ ]] || bad_usage "TIMEOUT_SECONDS must be a whole number of seconds"
[[ $INGESTION_ID =~ ^[a-z0-9][a-z0-9-]*$ ]] || bad_usage "INGESTION_ID looks wrong: $INGESTION_ID"
if [[ -z "${JSON_TOOL:-}" ]]; then
    if command -v jq >/dev/null; then JSON_TOOL=jq; else JSON_TOOL=python3; fi
fi
case "$JSON_TOOL" in
    jq | python3) command -v "$JSON_TOOL" >/dev/null || bad_usage "$JSON_TOOL is not installed" ;;
    *) bad_usage "JSON_TOOL must be jq or python3" ;;
esac
command -v curl >/dev/null || bad_usage "curl is not installed"

API="${AUTOLOADER_URL%/}/api/v1"
IDEMPOTENCY_KEY="daily-full-refresh-${INGESTION_ID}-$(date -u +%Y-%m-%d)"

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
BODY="$WORK/body.json"
HEADERS="$WORK/headers.txt"
# Headers go through a file only we can read: a token on curl's command line shows in `ps`.
(
    umask 077
    printf 'Authorization: Bearer %s\nAccept: application/json\n' "$AUTOLOADER_TOKEN"
    if [[ -n "${AUTOLOADER_TENANT:-}" ]]; then printf 'X-Tenant: %s\n' "$AUTOLOADER_TENANT"; fi
) >"$WORK/auth-headers"

# --- helpers ------------------------------------------------------------------------------

# json_get PATH: a scalar of the last response body, e.g. `.impact.files_to_process` or
# `.results[0].run_id`; prints nothing when the value is null, missing, or the body not JSON.
json_get() {
    if [[ $JSON_TOOL == jq ]]; then
        jq -r "($1) | if . == null then empty else tostring end" "$BODY" 2>/dev/null || true
    else
        python3 -c '
import json, re, sys
try:
    value = json.load(open(sys.argv[1]))
    for key, index in re.findall(r"\.(\w+)|\[(\d+)\]", sys.argv[2]):
        value = value[key] if key else value[int(index)]
except (LookupError, TypeError, ValueError):
    value = None
if isinstance(value, bool):
    print("true" if value else "false")
elif value is not None:
    print(value if isinstance(value, str) else json.dumps(value))
' "$BODY" "$1"
    fi
}

# json_lines PATH: each string of a list in the last response body, one per line.
json_lines() {
    if [[ $JSON_TOOL == jq ]]; then
        jq -r "($1) // [] | .[]" "$BODY" 2>/dev/null || true
    else
        python3 -c '
import json, sys
try:
    value = json.load(open(sys.argv[1]))
    for key in sys.argv[2].strip(".").split("."):
        value = value[key]
except (LookupError, TypeError, ValueError):
    value = []
for item in value or []:
    print(item)
' "$BODY" "$1"
    fi
}

# failed_files: "  - path [ERROR_CODE]: error", one line per failed file of the last run read.
failed_files() {
    if [[ $JSON_TOOL == jq ]]; then
        jq -r '(.failed_files // [])[]
            | "  - \(.path)\(if .error_code then " [\(.error_code)]" else "" end): \(.error // "no error message")"' \
            "$BODY" 2>/dev/null || true
    else
        python3 -c '
import json, sys
try:
    failed = json.load(open(sys.argv[1])).get("failed_files") or []
except (AttributeError, ValueError):
    failed = []
for item in failed:
    code = " [%s]" % item["error_code"] if item.get("error_code") else ""
    print("  - %s%s: %s" % (item.get("path"), code, item.get("error") or "no error message"))
' "$BODY"
    fi
}

# run_failure: what went wrong with the run last read, its failed files listed once.
run_failure() {
    local files error=""
    files=$(failed_files)
    # A PARTIAL_SUCCESS's error only counts the files again: the list says more.
    [[ $RUN_STATUS == PARTIAL_SUCCESS ]] || error=$(json_get .error)
    if [[ $RUN_STATUS == PARTIAL_SUCCESS || -n $files ]]; then
        echo "run $RUN_ID ended $RUN_STATUS: $(json_get .files_failed) of $(json_get .files_found)" \
            "files failed to load${error:+ ($error)}${files:+:}"
        [[ -z $files ]] || echo "$files"
    else
        echo "run $RUN_ID ended $RUN_STATUS: $(json_get .error)"
    fi
}

# header NAME: a header of the last response (case-insensitive), without its trailing CR.
header() {
    grep -i "^$1:" "$HEADERS" | tail -1 | cut -d: -f2- | tr -d '\r' | sed 's/^ *//' || true
}

# api METHOD PATH [JSON_BODY [CURL_ARGS...]]: one call; sets STATUS (000: unreachable).
api() {
    local method=$1 path=$2 data=${3:-}
    shift $(($# < 3 ? $# : 3))
    local args=(-sS -X "$method" -H "@$WORK/auth-headers" -o "$BODY" -D "$HEADERS"
        -w '%{http_code}' --connect-timeout 10 --max-time 120)
    if [[ -n $data ]]; then args+=(-H 'Content-Type: application/json' --data "$data"); fi
    : >"$BODY"
    STATUS=$(curl "${args[@]}" "$@" "$API$path") || STATUS=000
}

# describe_error: "CODE: detail (help)" of the last error response.
describe_error() {
    if [[ $STATUS == 000 ]]; then
        echo "cannot reach $API (see curl's message above)"
        return
    fi
    local code detail help
    code=$(json_get .error_code)
    detail=$(json_get .detail)
    help=$(json_get .help)
    echo "HTTP $STATUS ${code:-no error code}: ${detail:-$(head -c 300 "$BODY")}${help:+ ($help)}"
}

# --- 1. dry-run -------------------------------------------------------------------------
log "Dry-run of the full refresh of $INGESTION_ID on $API"
api POST "/ingestions/$INGESTION_ID/full-refresh" '{"dry_run": true}'
[[ $STATUS == 200 ]] || fail "dry-run refused: $(describe_error)"
PLAN_ID=$(json_get .plan_id)
log "Impact: $(json_get .impact.files_to_process) files," \
    "$(json_get .impact.estimated_data_size_gb) GB," \
    "about \$$(json_get .impact.estimated_cost_usd)," \
    "about $(json_get .impact.estimated_duration_minutes) min (plan $PLAN_ID)"
while IFS= read -r warning; do
    [[ -z $warning ]] || log "Warning: $warning"
done < <(json_lines .warnings)

# The server asks for the plan when the cost is above REFRESH_PLAN_REQUIRED_ABOVE_USD: a
# `plan_required` flag if the server has it, else its `next_steps.to_proceed` names plan_id.
PLAN_REQUIRED=$(json_get .plan_required)
if [[ -z $PLAN_REQUIRED ]]; then
    PLAN_REQUIRED=false
    if [[ $(json_get .next_steps.to_proceed) == *plan_id* ]]; then PLAN_REQUIRED=true; fi
fi
if [[ $PLAN_REQUIRED == true ]]; then
    [[ -n $PLAN_ID ]] || fail "the server requires a plan but the dry-run returned no plan_id"
    log "The cost needs the dry-run's plan: sending plan_id $PLAN_ID"
    REQUEST="{\"confirm\": true, \"auto_run\": true, \"plan_id\": \"$PLAN_ID\"}"
else
    REQUEST='{"confirm": true, "auto_run": true}'
fi

# --- 2. execute, once per day -----------------------------------------------------------
log "Full refresh of $INGESTION_ID (Idempotency-Key: $IDEMPOTENCY_KEY)"
api POST "/ingestions/$INGESTION_ID/full-refresh" "$REQUEST" -H "Idempotency-Key: $IDEMPOTENCY_KEY"
ERROR_CODE=$(json_get .error_code)
case "$STATUS" in
    200 | 202)
        OPERATION_ID=$(json_get .operation_id)
        if [[ $(header Idempotent-Replayed) == true ]]; then
            log "Already requested today: replayed the answer of operation $OPERATION_ID" \
                "(nothing was executed again)"
        else
            log "Operation $OPERATION_ID: $(json_get .status) - $(json_get .message)"
        fi
        RUN_ID=$(json_get .run_id)
        ;;
    422)
        [[ $ERROR_CODE == IDEMPOTENCY_KEY_REUSED ]] || fail "refused: $(describe_error)"
        # Today's key was used with another body: an earlier invocation today sent another
        # plan_id. It did execute; the answer names its operation: follow it instead.
        OPERATION_ID=$(json_get .operation_id)
        [[ -n $OPERATION_ID && $OPERATION_ID != null ]] \
            || fail "today's key was used with another request: $(describe_error)"
        log "Already requested today with an earlier plan: following operation $OPERATION_ID"
        api GET "/refresh-operations/$OPERATION_ID"
        [[ $STATUS == 200 ]] || fail "cannot read operation $OPERATION_ID: $(describe_error)"
        RUN_ID=$(json_get .run_id)
        log "Operation $OPERATION_ID: $(json_get .status)"
        ;;
    500)
        log "Operation $(json_get .operation_id) ended $(json_get .status): $(json_get .message)"
        log "State: $(json_get .recovery.state)"
        log "Recovery: $(json_get .recovery.action)"
        fail "$(json_get .recovery.message)"
        ;;
    409)
        case "$ERROR_CODE" in
            RUN_IN_PROGRESS) fail "a run is active: $(json_get .current_run_id); $(describe_error)" ;;
            REFRESH_IN_PROGRESS) fail "another refresh is in flight: $(describe_error)" ;;
            *) fail "refused: $(describe_error)" ;;
        esac
        ;;
    429) fail "rate limited, retry in $(header Retry-After) s: $(describe_error)" ;;
    *) fail "refused: $(describe_error)" ;;
esac
if [[ -z ${RUN_ID:-} ]]; then
    fail "operation ${OPERATION_ID:-?} triggered no run"
fi

# --- 3. wait for the run ----------------------------------------------------------------
log "Waiting for run $RUN_ID (at most $TIMEOUT_SECONDS s)"
deadline=$((SECONDS + TIMEOUT_SECONDS))
last_seen=""
while :; do
    api GET "/runs/$RUN_ID"
    case "$STATUS" in
        200)
            RUN_STATUS=$(json_get .status)
            seen="$RUN_STATUS $(json_get .files_loaded)/$(json_get .files_found) files"
            if [[ $seen != "$last_seen" ]]; then
                log "Run $RUN_ID: $seen, $(json_get .rows_written) rows"
                last_seen=$seen
            fi
            case "$RUN_STATUS" in
                SUCCESS)
                    log "Done: $INGESTION_ID fully refreshed (run $RUN_ID)"
                    exit 0
                    ;;
                PARTIAL_SUCCESS | FAILED | CANCELLED) fail "$(run_failure)" ;;
            esac
            ;;
        401 | 403 | 404) fail "cannot read run $RUN_ID: $(describe_error)" ;;
        *) log "Run $RUN_ID not readable now ($(describe_error)); trying again" ;;
    esac
    ((SECONDS < deadline)) || fail "run $RUN_ID still ${RUN_STATUS:-unknown} after $TIMEOUT_SECONDS s"
    sleep "$POLL_INTERVAL_SECONDS"
done
