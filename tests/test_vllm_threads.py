"""vLLM's CPU thread binding comes from the CPUs this process may use, and the user's setting wins."""

from __future__ import annotations

import os

import pytest

from llava_vitsplit.serve.vllm_threads import (
    BIND_VARIABLE,
    FROM_AFFINITY,
    RESERVED_VARIABLE,
    SOURCE_VARIABLE,
    apply_cpu_threads,
    cpu_list,
    cpu_thread_settings,
)


def test_cpu_list_uses_vllm_ranges():
    assert cpu_list({0, 1}) == "0-1"
    assert cpu_list([5, 0, 2, 1]) == "0-2,5"
    assert cpu_list({3}) == "3"
    with pytest.raises(ValueError, match="no CPUs"):
        cpu_list([])


def test_every_allowed_cpu_is_bound():
    # vLLM's own default (auto) keeps one of 2 cores for its scheduler: the model ran on one thread
    assert cpu_thread_settings({0, 1})[BIND_VARIABLE] == "0-1"


def test_apply_takes_the_affinity_mask_of_this_process():
    environ: dict[str, str] = {}
    effective = apply_cpu_threads(environ)
    assert environ == {BIND_VARIABLE: cpu_list(os.sched_getaffinity(0)), SOURCE_VARIABLE: FROM_AFFINITY}
    assert effective == {BIND_VARIABLE: environ[BIND_VARIABLE], RESERVED_VARIABLE: "(vLLM default)"}
    child = dict(environ)  # a vLLM child process inherits the binding and recomputes it
    assert apply_cpu_threads(child) == effective and child == environ


@pytest.mark.parametrize("variable,value", [(BIND_VARIABLE, "auto"), (RESERVED_VARIABLE, "1")])
def test_a_user_setting_is_kept(variable, value):
    environ = {variable: value}
    effective = apply_cpu_threads(environ)
    assert environ == {variable: value}  # nothing added next to the user's choice
    assert effective[variable] == value
