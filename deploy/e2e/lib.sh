# Shared by the engines of deploy/e2e/run: a cleanup stack, timed steps, a private PostgreSQL
# and the queries that check a study's end state. Sourced, never run.
# shellcheck shell=bash

E2E_REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# Reusable artefacts (base image, wheelhouse) live outside the clone, so a fresh clone reuses them.
E2E_CACHE=${HPSEARCH_E2E_CACHE:-/var/cache/hpsearch-e2e}
# The project installed as CI installs it (.ci/run makes this venv).
E2E_VENV=${HPSEARCH_E2E_VENV:-$E2E_REPO/.venv}
E2E_DATA=${HPSEARCH_E2E_DATA:-}
E2E_CLEANUP=()
E2E_STEPS=()
E2E_STEP=setup

e2e_log() { printf '[e2e %s %s] %s\n' "$E2E_ENGINE" "$(date -u +%H:%M:%S)" "$*" >&2; }

# One line saying which step failed and why, then exit 1 (the EXIT trap cleans up).
e2e_die() {
    printf 'e2e %s: step %s failed: %s\n' "$E2E_ENGINE" "$E2E_STEP" "$*" >&2
    exit 1
}

# Register a command to run on exit, in reverse order of registration.
e2e_on_exit() { E2E_CLEANUP+=("$1"); }

# e2e_stop PID...: SIGTERM, then wait up to 30 s for each to exit (SIGKILL after that), so no
# daemon writes into the work directory once it is removed.
e2e_stop() {
    local pid i
    for pid in "$@"; do
        [[ -n $pid ]] || continue
        kill "$pid" 2>/dev/null || continue
        for ((i = 0; i < 300; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -9 "$pid" 2>/dev/null || true
    done
}

e2e_cleanup() {
    local rc=$? i
    trap - EXIT INT TERM
    # A failed run first shows what its engine's daemons still know (an engine may define
    # e2e_diagnose: SLURM's view of its jobs), before the cleanup below stops them.
    if [[ $rc -ne 0 ]] && declare -F e2e_diagnose >/dev/null; then
        printf -- '--- %s: what the engine knew at the failure ---\n' "$E2E_ENGINE" >&2
        e2e_diagnose >&2 2>&1 || true
    fi
    for ((i = ${#E2E_CLEANUP[@]} - 1; i >= 0; i--)); do
        eval "${E2E_CLEANUP[i]}" >/dev/null 2>&1 || e2e_log "cleanup failed: ${E2E_CLEANUP[i]}"
    done
    if [[ -n ${E2E_WORK:-} ]]; then
        # A failed run shows the end of each log it kept (workers, daemons) before they go, so a
        # failure in CI can be diagnosed from its output alone.
        if [[ $rc -ne 0 ]]; then
            local log
            # the work directory's logs and those one level down (slurm/slurmctld.log, jobs/*.out)
            while IFS= read -r log; do
                [[ -s $log ]] || continue
                printf -- '--- last lines of %s ---\n' "${log#"$E2E_WORK"/}" >&2
                tail -n 15 "$log" >&2
            done < <(find "$E2E_WORK" -maxdepth 2 -type f \( -name '*.log' -o -name '*.out' \) | sort)
        fi
        # Whatever a daemon left mounted in the work directory (dockerd's netns), innermost first.
        awk -v w="$E2E_WORK/" 'index($2, w) == 1 {print $2}' /proc/mounts | sort -r | xargs -r -n1 umount -l
        [[ -z ${HPSEARCH_E2E_KEEP:-} ]] && rm -rf "$E2E_WORK"
    fi
    exit "$rc"
}

# e2e_begin ENGINE: a work directory, the traps, the data file and the venv.
e2e_begin() {
    E2E_ENGINE=$1
    E2E_T0=$(date +%s.%N)
    [[ $(id -u) -eq 0 ]] || e2e_die "run it as root: it installs packages and starts daemons"
    E2E_WORK=$(mktemp -d "/tmp/hpsearch-e2e-$E2E_ENGINE.XXXXXX")
    chmod 755 "$E2E_WORK"
    trap e2e_cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    mkdir -p "$E2E_CACHE"
    if [[ -z $E2E_DATA ]]; then
        for f in "$E2E_REPO/../shared/data/mnist.npz" /work/shared/data/mnist.npz; do
            [[ -f $f ]] && { E2E_DATA=$(realpath "$f"); break; }
        done
    fi
    [[ -f $E2E_DATA ]] || e2e_die "no MNIST file: set HPSEARCH_E2E_DATA=/path/to/mnist.npz"
    [[ -x $E2E_VENV/bin/hpsearch ]] || e2e_die "no hpsearch in $E2E_VENV: run .ci/run, or set HPSEARCH_E2E_VENV to a venv with \`pip install -e .\`"
}

# e2e_step NAME CMD...: run CMD as the step NAME and record its seconds.
e2e_step() {
    local name=$1 t0 t1
    shift
    E2E_STEP=$name
    e2e_log "step $name"
    t0=$(date +%s.%N)
    "$@" || e2e_die "exit $?"
    t1=$(date +%s.%N)
    E2E_STEPS+=("\"$name\": $(printf '%.1f' "$(echo "$t1 - $t0" | bc)")")
}

# e2e_apt PACKAGE...: install the missing Debian packages without starting their daemons.
e2e_apt() {
    local missing=() p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    [[ ${#missing[@]} -eq 0 ]] && return 0
    e2e_log "apt-get install ${missing[*]}"
    apt-get update -qq || return 1
    # No init system starts daemons here: each engine starts its own, privately, and stops them.
    DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# e2e_pg_start DIR PORT LISTEN [WRAPPER...]: a private PostgreSQL cluster in DIR (trust auth for
# the e2e's own networks), database hpsearch; WRAPPER (e.g. `ip netns exec db`) runs it elsewhere.
e2e_pg_start() {
    local dir=$1 port=$2 listen=$3 bin
    shift 3
    bin=$(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V | tail -1)
    [[ -x $bin/initdb ]] || return 1
    mkdir -p "$dir" && chown postgres:postgres "$dir"
    runuser -u postgres -- "$bin/initdb" -D "$dir/data" -U postgres -A trust >/dev/null || return 1
    echo "host all all 0.0.0.0/0 trust" >>"$dir/data/pg_hba.conf"
    # -m immediate: these are throwaway clusters; the data directory goes with E2E_WORK.
    e2e_on_exit "runuser -u postgres -- $bin/pg_ctl -D $dir/data -m immediate -w stop"
    "$@" runuser -u postgres -- "$bin/pg_ctl" -D "$dir/data" -l "$dir/log" -w -t 60 \
        -o "-p $port -k $dir -c listen_addresses=$listen -c max_connections=100 -c fsync=off" start >/dev/null || return 1
    E2E_PSQL=("$@" psql -h "$dir" -p "$port" -U postgres -X -q -v ON_ERROR_STOP=1)
    "${E2E_PSQL[@]}" -d postgres -c "CREATE DATABASE hpsearch" >/dev/null
}

e2e_sql() { "${E2E_PSQL[@]}" -d hpsearch -At -F ' ' -c "$1"; }

# e2e_states STUDY: "finished running fail waiting" trial counts of STUDY.
e2e_states() {
    e2e_sql "SELECT count(*) FILTER (WHERE t.state IN ('COMPLETE', 'PRUNED')),
                    count(*) FILTER (WHERE t.state = 'RUNNING'),
                    count(*) FILTER (WHERE t.state = 'FAIL'),
                    count(*) FILTER (WHERE t.state = 'WAITING')
             FROM trials t JOIN studies s USING (study_id) WHERE s.study_name = '$1'"
}

# e2e_fail_reasons STUDY: the fail_reason of each FAIL trial, one a line.
e2e_fail_reasons() {
    e2e_sql "SELECT a.value_json FROM trial_user_attributes a JOIN trials t USING (trial_id)
             JOIN studies s USING (study_id)
             WHERE s.study_name = '$1' AND t.state = 'FAIL' AND a.key = 'fail_reason' ORDER BY t.number"
}

# e2e_retries STUDY: trials that the worker enqueued again for a trial it failed (user attribute
# retry_of, search/fleet/worker.py), in any state.
e2e_retries() {
    e2e_sql "SELECT count(*) FROM trial_user_attributes a JOIN trials t USING (trial_id)
             JOIN studies s USING (study_id) WHERE s.study_name = '$1' AND a.key = 'retry_of'"
}

# e2e_fail_reasons_json STUDY: the fail reasons as a JSON list.
e2e_fail_reasons_json() { echo "[$(e2e_fail_reasons "$1" | paste -sd, -)]"; }

# _e2e_attempts STUDY: SQL of one row per trial of STUDY (docs/faults.md, "Checkpoints"):
# number, state; reached, the epochs of its run's timeline when it ended (its epochs_run, or its
# reported epochs where a killed worker recorded none; a resumed trial's include the epochs it
# carried); from_epoch and from_trial, where it resumed (user attribute resumed_from: the first
# epoch it trained itself, and whose checkpoint); retry_of, the trial it retries; series, the
# first trial of its series of attempts (system attribute failed_trial).
_e2e_attempts() {
    cat <<SQL
WITH raw AS (
    SELECT t.number, t.state::text AS state,
           (SELECT count(DISTINCT v.step) FROM trial_intermediate_values v WHERE v.trial_id = t.trial_id) AS reported,
           (SELECT a.value_json::jsonb FROM trial_user_attributes a WHERE a.trial_id = t.trial_id AND a.key = 'epochs_run') AS epochs_run,
           (SELECT a.value_json::jsonb FROM trial_user_attributes a WHERE a.trial_id = t.trial_id AND a.key = 'resumed_from') AS resumed,
           (SELECT a.value_json::jsonb FROM trial_user_attributes a WHERE a.trial_id = t.trial_id AND a.key = 'retry_of') AS retry_of,
           (SELECT a.value_json::jsonb FROM trial_system_attributes a WHERE a.trial_id = t.trial_id AND a.key = 'failed_trial') AS series
    FROM trials t JOIN studies s USING (study_id) WHERE s.study_name = '$1'
), attempts AS (
    SELECT number, state, GREATEST(COALESCE((epochs_run #>> '{}')::int, 0), reported) AS reached,
           (resumed ->> 'epoch')::int AS from_epoch, (resumed ->> 'trial')::int AS from_trial,
           (retry_of #>> '{}')::int AS retry_of, COALESCE((series #>> '{}')::int, number) AS series
    FROM raw
)
SQL
}

# e2e_own_epoch_running STUDY: how many RUNNING trials of STUDY have trained an epoch of their
# own. A retry reports the epochs it resumed with again at once, so its reported epochs must
# pass those its predecessor reached: an interruption after that lands past a finished epoch.
e2e_own_epoch_running() {
    e2e_sql "$(_e2e_attempts "$1")
             SELECT count(*) FROM attempts r LEFT JOIN attempts p ON p.number = r.retry_of
             WHERE r.state = 'RUNNING' AND r.reached > COALESCE(p.reached, 0)"
}

# e2e_resumes STUDY MAX_LOST MIN_RESUMED: log, per interrupted (FAIL) trial of STUDY, the epoch
# it was interrupted at and the epoch its retry resumed from, and the epochs the study trained
# in all against an uninterrupted run. Dies (one line) when a retry that ran trained from epoch
# 0 although its predecessor had finished an epoch (SIGTERM writes a checkpoint at once; the
# engines kill -9 only after a periodic one), when it resumed past the epochs its predecessor
# reached, when it lost more than MAX_LOST finished epochs ("": any, as kill -9 may), or when
# fewer than MIN_RESUMED retries resumed (so the check cannot pass with nothing to check).
# Sets E2E_RESUMED (a JSON list: trial, interrupted_at, retry, resumed_from; null where there is
# none) and E2E_EPOCHS (a JSON object: trained, uninterrupted, lost, finished).
e2e_resumes() {
    local study=$1 max_lost=$2 min_resumed=$3 n at retry state from src line resumed=0 sep="" rows totals
    local trained uninterrupted finished left
    E2E_STEP=resume_check
    rows=$(e2e_sql "$(_e2e_attempts "$study")
        SELECT f.number, f.reached, COALESCE(r.number::text, '-'), COALESCE(r.state, '-'),
               COALESCE(r.from_epoch::text, '-'), COALESCE(r.from_trial::text, '-')
        FROM attempts f LEFT JOIN attempts r ON r.retry_of = f.number
        WHERE f.state = 'FAIL' ORDER BY f.number") || e2e_die "could not read the trials of study $study"
    E2E_RESUMED="["
    while read -r n at retry state from src; do
        [[ -n $n ]] || continue
        line="trial $n (interrupted at epoch $at)"
        if [[ $retry == - ]]; then
            line+=" not retried"
        elif [[ $state == WAITING ]]; then
            line+=" retried as trial $retry, not run (WAITING)"
        elif [[ $from == - ]]; then
            line+=" retried as trial $retry from epoch 0"
            [[ $at -eq 0 || $state == RUNNING ]] ||
                e2e_die "study $study: trial $n was interrupted after $at finished epochs, but its retry $retry ($state) trained from epoch 0: it did not resume"
        else
            line+=" resumed as trial $retry from epoch $from"
            [[ $src == "$n" ]] || line+=" (the checkpoint of trial $src)"
            [[ $from -le $at ]] || e2e_die "study $study: trial $retry resumed from epoch $from, past the $at epochs trial $n had finished"
            [[ -z $max_lost || $((at - from)) -le $max_lost ]] ||
                e2e_die "study $study: trial $retry resumed from epoch $from, $((at - from)) finished epochs before trial $n was interrupted (at most $max_lost expected)"
            resumed=$((resumed + 1))
        fi
        e2e_log "$line"
        [[ $from == - ]] && from=null
        [[ $retry == - ]] && retry=null
        E2E_RESUMED+="$sep{\"trial\": $n, \"interrupted_at\": $at, \"retry\": $retry, \"resumed_from\": $from}"
        sep=", "
    done <<<"$rows"
    E2E_RESUMED+="]"
    # trained: what every attempt trained itself (a resumed one's carried epochs are its
    # predecessor's); uninterrupted: for each series of attempts, the epochs of its last attempt
    # that ran, which an uninterrupted run would have trained to get as far; finished: the
    # epochs of the finished trials (the same, when every series finished).
    totals=$(e2e_sql "$(_e2e_attempts "$study")
        SELECT COALESCE(sum(GREATEST(reached - COALESCE(from_epoch, 0), 0)) FILTER (WHERE state <> 'WAITING'), 0),
               (SELECT COALESCE(sum(reached), 0) FROM (SELECT DISTINCT ON (series) reached FROM attempts
                                                        WHERE state <> 'WAITING' ORDER BY series, number DESC) last),
               COALESCE(sum(reached) FILTER (WHERE state IN ('COMPLETE', 'PRUNED')), 0)
        FROM attempts") || e2e_die "could not count the epochs of study $study"
    read -r trained uninterrupted finished <<<"$totals"
    # A series that ended (finished, or out of attempts) keeps no checkpoint (docs/faults.md).
    left=$(e2e_sql "SELECT CASE WHEN to_regclass('hpsearch_checkpoints') IS NULL THEN 'none' END") || e2e_die "could not look for the checkpoints table"
    if [[ $left == none ]]; then
        left=0
    else
        left=$(e2e_sql "SELECT count(*) FROM hpsearch_checkpoints c JOIN studies s USING (study_id) WHERE s.study_name = '$study'") ||
            e2e_die "could not count the checkpoints of study $study"
    fi
    e2e_log "study $study: $trained epochs trained in all, $uninterrupted in an uninterrupted run ($((trained - uninterrupted)) lost to interruptions), $finished by its finished trials; retries resumed from a checkpoint: $resumed; checkpoints left: $left"
    # shellcheck disable=SC2034  # read by the engines, in their e2e_finish
    E2E_EPOCHS="{\"trained\": $trained, \"uninterrupted\": $uninterrupted, \"lost\": $((trained - uninterrupted)), \"finished\": $finished, \"checkpoints_left\": $left}"
    [[ $resumed -ge $min_resumed ]] || e2e_die "study $study: $resumed retries resumed from a checkpoint (expected at least $min_resumed)"
    [[ $left -eq 0 ]] || e2e_die "study $study: $left checkpoints left, though no attempt will resume from them"
}

# e2e_wait SECONDS WHAT CMD...: poll CMD every second until it succeeds.
e2e_wait() {
    local limit=$1 what=$2 i
    shift 2
    for ((i = 0; i < limit; i++)); do
        "$@" && return 0
        sleep 1
    done
    e2e_die "timed out after ${limit}s waiting for $what"
}

# e2e_finish key=value...: print the engine's JSON line (values are numbers or JSON already).
e2e_finish() {
    local out="{\"engine\": \"$E2E_ENGINE\"" kv s sep=""
    for kv in "$@"; do out+=", \"${kv%%=*}\": ${kv#*=}"; done
    out+=", \"steps_s\": {"
    for s in "${E2E_STEPS[@]}"; do out+="$sep$s"; sep=", "; done
    out+="}, \"total_s\": $(printf '%.1f' "$(echo "$(date +%s.%N) - $E2E_T0" | bc)")}"
    echo "$out"
}
