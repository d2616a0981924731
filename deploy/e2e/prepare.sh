# The prepare step of deploy/e2e/run: what the engines would otherwise fetch and build at their
# start, done ahead so that it can overlap other work (.ci/run runs it beside the test suite).
# It installs every engine's Debian packages and, through the compose engine's own steps, the
# Compose plugin, the debootstrap base image, the wheelhouse and the two images, all into the
# cache (/var/cache/hpsearch-e2e); it starts no study. An engine run after it finds everything
# in place and skips those steps; without it each engine still installs what it lacks itself.
# Sourced by deploy/e2e/run, after compose.sh.
# shellcheck shell=bash disable=SC2034  # E2E_STEP and the like are read by lib.sh

engine_prepare() {
    # The packages of slurm.sh, hosts.sh and compose.sh, in one apt transaction.
    e2e_step packages e2e_apt munge slurmctld slurmd slurm-client postgresql bc iproute2 iptables docker.io debootstrap curl
    e2e_step setup _compose_setup
    e2e_step base_image _compose_base
    e2e_step wheelhouse _compose_wheelhouse
    e2e_step build _compose_build
    e2e_finish
}
