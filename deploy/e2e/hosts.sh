# The separate-hosts engine of deploy/e2e/run: four "hosts" that are Linux network namespaces
# joined by veth pairs to a bridge in the database's namespace. PostgreSQL listens on
# 10.77.0.1, an address that exists only inside them; each of three worker hosts runs the
# worker command line of the Kubernetes worker Job (deploy/k8s, rendered by kubectl kustomize:
# one source for both). Checks: the study ends exact; one host's link cut for 15 s loses
# nothing; one host killed outright (its whole process tree, kill -9) once its trial has a
# periodic checkpoint has that trial failed once its heartbeat is stale and retried on another
# host, which resumes it from that checkpoint or a later one (issue 24). Sourced by deploy/e2e/run.
# shellcheck shell=bash disable=SC2034  # E2E_STEP and the like are read by lib.sh

HOSTS_NET=10.77.0

_hosts_setup() {
    e2e_apt iproute2 iptables postgresql bc || return 1
    local tag=hpse2e$$ n
    NS_DB=$tag-db
    ip netns add "$NS_DB" || return 1
    e2e_on_exit "ip netns del $NS_DB"
    ip -n "$NS_DB" link set lo up
    ip -n "$NS_DB" link add br0 type bridge
    ip -n "$NS_DB" addr add "$HOSTS_NET.1/24" dev br0
    ip -n "$NS_DB" link set br0 up
    for n in 1 2 3; do
        ip netns add "$tag-h$n" || return 1
        # Killing every process of the namespace first: no worker outlives its host.
        e2e_on_exit "_hosts_kill_ns $tag-h$n; ip netns del $tag-h$n"
        ip -n "$tag-h$n" link set lo up
        # eth0 in the host, its peer "h$n" on the database's bridge.
        ip -n "$tag-h$n" link add eth0 type veth peer name "h$n" netns "$NS_DB" || return 1
        ip -n "$tag-h$n" addr add "$HOSTS_NET.1$n/24" dev eth0
        ip -n "$tag-h$n" link set eth0 up
        ip -n "$NS_DB" link set "h$n" master br0 up
    done
    e2e_pg_start "$E2E_WORK/pg" 5432 "$HOSTS_NET.1" ip netns exec "$NS_DB"
}

_hosts_kill_ns() {
    local pids
    pids=$(ip netns pids "$1" 2>/dev/null | tr '\n' ' ')
    # shellcheck disable=SC2086  # one word per pid
    [[ -n $pids ]] && kill -9 $pids 2>/dev/null
    return 0
}

# The argv of a Job's container in the Kubernetes manifests (overlay cpu-smoke, the CPU one),
# one word a line: the e2e runs the manifests' own command lines.
_k8s_args() {
    "$E2E_VENV/bin/kubectl" kustomize "$E2E_REPO/deploy/k8s/overlays/cpu-smoke" |
        "$E2E_VENV/bin/python" -c '
import sys, yaml
for doc in yaml.safe_load_all(sys.stdin):
    if doc and doc["kind"] == "Job" and doc["metadata"]["name"] == sys.argv[1]:
        print("\n".join(doc["spec"]["template"]["spec"]["containers"][0]["args"]))' "$1"
}

# _on_host N CMD...: run CMD on host N, its environment that of a worker machine.
_on_host() {
    local n=$1
    shift
    ip netns exec "hpse2e$$-h$n" env OPTUNA_STORAGE="postgresql+psycopg2://postgres@$HOSTS_NET.1:5432/hpsearch" \
        HPSEARCH_DATA="$E2E_DATA" HPSEARCH_HOME="$E2E_WORK/home$n" HPSEARCH_LANES="${HPSEARCH_LANES:-1}" \
        HPSEARCH_HEARTBEAT_S=2 HPSEARCH_GRACE_S=25 HPSEARCH_DB_RETRY_S=90 HPSEARCH_CHECKPOINT_S="$CHECKPOINT_S" "$@"
}

_hosts_study() {
    local init worker n
    mapfile -t init < <(_k8s_args hpsearch-study-init)
    mapfile -t worker < <(_k8s_args hpsearch-worker)
    [[ ${init[0]:-} == init && ${worker[0]:-} == worker ]] || { e2e_log "no init/worker args in the rendered manifests"; return 1; }
    # The manifests' command lines, the e2e's study and size appended (argparse: the last wins).
    _on_host 1 "$E2E_VENV/bin/hpsearch" "${init[@]}" --study "$STUDY" "${STUDY_FLAGS[@]}" >/dev/null || return 1
    for n in 1 2 3; do
        _on_host "$n" "$E2E_VENV/bin/hpsearch" "${worker[@]}" --study "$STUDY" --trials "$EXPECTED" \
            >"$E2E_WORK/worker$n.log" 2>&1 &
        WORKER_PID[n]=$!
    done
    e2e_wait 180 "a running trial on each of the 3 hosts" _running_at_least 3
}

_running_at_least() { [[ $(e2e_own_epoch_running "$STUDY") -ge $1 ]]; }

# On a failure (lib.sh's e2e_cleanup): every worker's lines about heartbeats, sweeps and dropped
# trials, whole (the logs' last lines may not reach back to the cut), and each trial's state
# and last heartbeat as the database holds them. A run here once had the cut's trial failed
# by a sweep, its heartbeat never recorded again after the cut, with only the last lines to go on.
e2e_diagnose() {
    grep -H -n -E "heartbeat|sweep|dropped|retry|storage" "$E2E_WORK"/worker*.log 2>/dev/null | cut -c1-300 || true
    e2e_sql "SELECT t.number, t.state, t.datetime_start, h.heartbeat FROM trials t JOIN studies s USING (study_id)
             LEFT JOIN trial_heartbeats h USING (trial_id) WHERE s.study_name = '$STUDY' ORDER BY t.number" 2>&1 || true
}

# _host_trial N [COLUMNS [JOIN]]: COLUMNS (default the trial_id) of the trial host N's processes
# are running, if any; JOIN adds a table to the query (aliases: t trials, a the pid attribute).
_host_trial() {
    local pids
    pids=$(ip netns pids "hpse2e$$-h$1" 2>/dev/null | sed "s/.*/'&'/" | paste -sd, -)
    [[ -n $pids ]] || return 1
    e2e_sql "SELECT ${2:-t.trial_id} FROM trials t JOIN studies s USING (study_id) ${3:-}
             JOIN trial_user_attributes a ON a.trial_id = t.trial_id AND a.key = 'pid'
             WHERE s.study_name = '$STUDY' AND t.state = 'RUNNING' AND a.value_json IN ($pids) LIMIT 1" 2>/dev/null
}

# _host3_checkpointed: host 3's running trial has a checkpoint in the database (a kill -9 leaves
# only the periodic ones); sets KILLED_TRIAL and KILL_CKPT, the epoch it holds.
_host3_checkpointed() {
    local row
    row=$(_host_trial 3 "t.number, c.epoch" "JOIN hpsearch_checkpoints c ON c.trial_id = t.trial_id") || return 1
    [[ -n $row ]] && read -r KILLED_TRIAL KILL_CKPT <<<"$row"
}

_host2_running() { CUT_TRIAL=$(_host_trial 2) && [[ -n $CUT_TRIAL ]]; }

# Host 2's trial beat again after the link came back (or ended): nothing can fail it from then
# on. Sets CUT_STATE and CUT_BEAT (the heartbeat, seconds since the epoch).
_host2_beat_again() {
    read -r CUT_STATE CUT_BEAT <<<"$(e2e_sql "SELECT t.state, COALESCE(extract(epoch FROM h.heartbeat::timestamptz), 0)
                                             FROM trials t LEFT JOIN trial_heartbeats h USING (trial_id) WHERE t.trial_id = $CUT_TRIAL")"
    [[ $CUT_STATE != RUNNING || $(bc <<<"$CUT_BEAT > $CUT_UP") -eq 1 ]]
}

# Cut host 2 off for 15 s mid-trial. The trial must survive it: its heartbeat, silent while
# the link is down, must come back within the grace period. The cut is a silent drop both
# ways (iptables on each side), as a partition or a dead switch looks to TCP: no error, no
# answer, so an established connection waits out TCP's retransmission back-off unless the
# worker gives it up (libpq's tcp_user_timeout, storage/engine.py). The failures are counted
# once host 2 has beaten again, not as the link comes up: a trial failed for a heartbeat that
# came back too late is failed after that moment.
_hosts_cut() {
    e2e_wait 60 "a running trial on host 2" _host2_running
    local before
    before=$(e2e_sql "SELECT extract(epoch FROM heartbeat::timestamptz) FROM trial_heartbeats WHERE trial_id = $CUT_TRIAL")
    ip netns exec "$NS_DB" iptables -I INPUT -s "$HOSTS_NET.12" -j DROP || return 1
    ip netns exec "hpse2e$$-h2" iptables -I INPUT -s "$HOSTS_NET.1" -j DROP || return 1
    sleep 15
    ip netns exec "$NS_DB" iptables -D INPUT -s "$HOSTS_NET.12" -j DROP || return 1
    ip netns exec "hpse2e$$-h2" iptables -D INPUT -s "$HOSTS_NET.1" -j DROP || return 1
    CUT_UP=$(e2e_sql "SELECT extract(epoch FROM localtimestamp::timestamptz)")
    e2e_wait 60 "host 2's heartbeat after its link came back" _host2_beat_again
    kill -0 "${WORKER_PID[2]}" || { e2e_log "the worker on host 2 died during the cut"; return 1; }
    CUT_SILENCE=$(printf '%.1f' "$(bc <<<"$CUT_BEAT - $before")")
    e2e_log "host 2's trial (id $CUT_TRIAL, $CUT_STATE) beat again $CUT_SILENCE s after its last heartbeat before the 15 s cut (grace 25 s)"
    read -r _ _ CUT_FAILED _ <<<"$(e2e_states "$STUDY")"
}

_hosts_kill() {
    e2e_wait 120 "a running trial on each of the 3 hosts" _running_at_least 3
    e2e_wait 120 "a checkpoint of the trial on host 3" _host3_checkpointed
    _hosts_kill_ns "hpse2e$$-h3"
    wait "${WORKER_PID[3]}" 2>/dev/null
    KILLED_EXIT=$?
    e2e_wait 900 "the workers on hosts 1 and 2 to finish" _workers_done
    if ! wait "${WORKER_PID[1]}" || ! wait "${WORKER_PID[2]}"; then
        e2e_log "a worker on host 1 or 2 exited non-zero"
        return 1
    fi
}

_workers_done() { ! kill -0 "${WORKER_PID[1]}" 2>/dev/null && ! kill -0 "${WORKER_PID[2]}" 2>/dev/null; }

engine_hosts() {
    EXPECTED=${HPSEARCH_E2E_TRIALS:-6}
    STUDY=e2e-hosts
    # Trials of tens of seconds, so a link cut and a kill land in the middle of one.
    STUDY_FLAGS=(--epochs 20 --train-size 3000 --pruner none --seed 3)
    # Periodic checkpoints every few seconds, so the killed host's trial has one to resume from.
    CHECKPOINT_S=5
    declare -ga WORKER_PID=()
    e2e_step setup _hosts_setup
    e2e_step study _hosts_study
    e2e_step link_cut _hosts_cut
    e2e_step host_kill _hosts_kill
    local finished running fail retried
    read -r finished running fail _ <<<"$(e2e_states "$STUDY")"
    # Retried elsewhere: a finished trial that Optuna's retry callback made from a failed one.
    retried=$(e2e_sql "SELECT count(*) FROM trials t JOIN studies s USING (study_id)
                       JOIN trial_system_attributes a USING (trial_id)
                       WHERE s.study_name = '$STUDY' AND a.key = 'failed_trial' AND t.state IN ('COMPLETE', 'PRUNED')")
    E2E_STEP=check
    [[ $finished -eq $EXPECTED && $running -eq 0 ]] || e2e_die "study $STUDY: $finished finished (expected $EXPECTED), $running running"
    [[ $CUT_FAILED -eq 0 ]] || e2e_die "the 15 s link cut failed $CUT_FAILED trials (expected none; host 2 silent for $CUT_SILENCE s): $(e2e_fail_reasons "$STUDY" | paste -sd';' -)"
    [[ $fail -eq 1 && $retried -eq 1 ]] ||
        e2e_die "after killing host 3: $fail failed, $retried retried trials (expected 1 and 1): $(e2e_fail_reasons "$STUDY" | paste -sd';' -)"
    # kill -9 loses what was trained since the last periodic checkpoint: any number of epochs,
    # but never the checkpoint seen before the kill.
    e2e_resumes "$STUDY" "" 1
    local from
    from=$(e2e_sql "$(_e2e_attempts "$STUDY") SELECT COALESCE(from_epoch, 0) FROM attempts WHERE retry_of = $KILLED_TRIAL") ||
        e2e_die "could not read the retry of trial $KILLED_TRIAL"
    [[ ${from:-0} -gt $KILL_CKPT ]] ||
        e2e_die "the retry of trial $KILLED_TRIAL resumed from epoch ${from:-0}, though its checkpoint at epoch $KILL_CKPT was stored before host 3 was killed"
    e2e_finish expected="$EXPECTED" finished="$finished" running="$running" hosts=3 \
        cut_s=15 cut_silence_s="$CUT_SILENCE" failed_by_cut="$CUT_FAILED" killed_exit="$KILLED_EXIT" failed="$fail" retried_elsewhere="$retried" \
        killed_trial="$KILLED_TRIAL" killed_checkpoint_epoch="$KILL_CKPT" checkpoint_s="$CHECKPOINT_S" \
        resumed="$E2E_RESUMED" epochs="$E2E_EPOCHS"
}
